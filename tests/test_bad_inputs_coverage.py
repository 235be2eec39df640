"""The bad-input suite as a whole: at least 150 cases, every entry point, every class."""

from __future__ import annotations

from collections import Counter

import test_bad_inputs_api
import test_bad_inputs_config
import test_bad_inputs_files
from bad_input import ENTRIES, KINDS

TABLES = (test_bad_inputs_api, test_bad_inputs_config, test_bad_inputs_files)


def test_the_suite_covers_every_entry_point_and_class_of_bad_input() -> None:
    cases = [case for table in TABLES for case in table.CASES]
    assert len(cases) >= 150, len(cases)
    assert len({c.id for c in cases}) == len(cases), "case ids must be unique across tables"
    entries, kinds = Counter(c.entry for c in cases), Counter(c.kind for c in cases)
    assert set(entries) == set(ENTRIES), entries
    assert set(kinds) == set(KINDS), kinds
    refusals = [c for c in cases if c.expect.error]
    assert all(c.expect.fragments for c in refusals), "every refusal checks its message"
