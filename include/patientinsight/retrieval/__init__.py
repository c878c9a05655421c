"""From a query to the cases that answer it: the retrievers (searcher), a version ready to answer
(cases: CaseIndex) and matching passages. Writing about the cases is generation/'s job."""
