"""From a query to an answer: the retrievers, a version ready to answer (CaseIndex), matching passages,
the generators and the answer that cites the cases."""
