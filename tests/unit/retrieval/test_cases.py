"""What a returned case links to: its PMC article, from the uid."""

from __future__ import annotations

from patientinsight.retrieval.cases import pmc_url


def test_the_pmc_link_comes_from_the_uid() -> None:
    assert pmc_url("7665777-2") == "https://pmc.ncbi.nlm.nih.gov/articles/PMC7665777/"
    assert pmc_url("not-a-pmc-uid") is None
