"""Erasure's scrub: what it reports as changed decides what callers rewrite or blank
(an account's owner e-mail, every other message of the account), so nothing may be
reported changed when no needle is long enough to search for."""

from __future__ import annotations

from shared.privacy import ERASED, needles_of, scrub


def test_needles_shorter_than_three_characters_find_and_change_nothing():
    doc = {"greeting": "Hi Al", "owner": "al@x.io", "tags": ["Al", 1, None]}
    assert needles_of(["Al", " a ", None, ""]) == []
    assert scrub(doc, ["Al", ""]) == (doc, False)
    assert scrub("Hi Al", ["Al"]) == ("Hi Al", False)
    assert scrub(doc, ["ada"]) == (doc, False)  # searched for, found nowhere


def test_a_needle_of_three_characters_or_more_scrubs_nested_values_case_insensitively():
    doc = {"greeting": "Hi ADA", "list": ["x", {"who": "ada lovelace"}], "n": 3, "key ada": "kept"}
    out, changed = scrub(doc, [" Ada "])
    assert changed and out == {"greeting": ERASED, "list": ["x", {"who": ERASED}], "n": 3, "key ada": "kept"}
    assert doc["greeting"] == "Hi ADA"  # a copy: the original is untouched
