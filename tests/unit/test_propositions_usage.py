"""Loan reports are checked one by one: a bad report is rejected with the fields at fault, the good ones pass."""

from __future__ import annotations

from typing import Any

from services.propositions.usage import BatchResult, Rejection, parse_loans
from shared.events import FieldError
from shared.events.propositions import LoanBorrowed, LoanReserved, LoanReturned

REPORT: dict[str, Any] = {
    "event": "borrowed",
    "member_id": "cc02c620-5a1b-4e0f-9d51-2f3b8f6f0e11",
    "library": "oba",
    "branch": "oosterdok",
    "channel": "offline",
    "platform": "kiosk",
    "item_id": "9789021416011",
    "loan_id": "L-1",
}


def test_each_kind_of_report_becomes_its_own_event() -> None:
    reports = [
        REPORT,
        {**REPORT, "event": "reserved", "loan_id": None, "reservation_id": "R-1"},
        {**REPORT, "event": "returned"},
    ]
    valid, rejected = parse_loans(reports)
    assert rejected == []
    borrowed, reserved, returned = (report.data() for _, report in valid)
    assert isinstance(borrowed, LoanBorrowed) and borrowed.branch == "oosterdok"
    assert isinstance(reserved, LoanReserved) and reserved.pickup_branch == "oosterdok"
    assert isinstance(returned, LoanReturned) and returned.loan_id == "L-1"


def test_a_bad_report_is_rejected_by_index_naming_its_fields_and_the_others_pass() -> None:
    without_loan_id = {k: v for k, v in REPORT.items() if k != "loan_id"}
    reservation_without_id = {**REPORT, "event": "reserved"}
    valid, rejected = parse_loans(
        [REPORT, without_loan_id, reservation_without_id, {**REPORT, "id": "x", "channel": "tv"}, 42]
    )

    assert [index for index, _ in valid] == [0]
    by_index = {r.index: r for r in rejected}
    assert [e.field for e in by_index[1].errors] == ["loan_id"]
    assert [e.field for e in by_index[2].errors] == ["reservation_id"]
    assert (by_index[3].id, [e.field for e in by_index[3].errors]) == ("x", ["channel"])
    assert by_index[4].status == 422


def test_a_batch_with_nothing_accepted_is_a_422_and_lists_rejections_in_order() -> None:
    error = [FieldError("library", "no such library")]
    result = BatchResult([], [Rejection(2, None, 422, error), Rejection(0, "a", 403, error)])
    status, reply = result.reply()
    assert status == 422
    assert [r["index"] for r in reply["rejected"]] == [0, 2]
    assert BatchResult(["e1"], []).reply() == (202, {"accepted": ["e1"], "rejected": []})
