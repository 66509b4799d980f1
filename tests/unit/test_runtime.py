"""The local runtime's pure parts."""

from __future__ import annotations

from deploy.runtime import _new_cluster_id


def test_a_cluster_id_never_starts_with_a_dash_which_the_storage_tool_would_take_for_an_option() -> None:
    # One in 64 random ids would start with '-'; a thousand draws would all but surely meet one.
    ids = [_new_cluster_id() for _ in range(1000)]
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)
