"""What the desk offers a member: programmes for basic skills when they struggle with them, else what is for
their age."""

from __future__ import annotations

from services.identity.pages import fits

BOEKSTART = {"theme": "reading-and-language", "target_groups": ["babies-and-toddlers", "parents"]}
DIGITAALHUIS = {"theme": "social-participation", "target_groups": ["low-literate-adults", "newcomers", "adults"]}
KLIK_EN_TIK = {"theme": "digital-skills", "target_groups": ["adults", "seniors"]}
EBOOKS = {"theme": "reading-and-language", "target_groups": ["children", "teenagers", "adults", "seniors"]}


def test_basic_skills_programmes_show_only_for_someone_who_struggles() -> None:
    assert [fits(p, "18-64", True) for p in (DIGITAALHUIS, KLIK_EN_TIK, EBOOKS)] == [True, True, True]
    assert [fits(p, "18-64", False) for p in (DIGITAALHUIS, KLIK_EN_TIK, EBOOKS)] == [False, False, True]


def test_the_rest_fits_by_age_band() -> None:
    assert fits(BOEKSTART, "0-3", False) and not fits(BOEKSTART, "18-64", False)
    assert fits(EBOOKS, "12-17", False) and not fits(EBOOKS, "0-3", False)
