"""The dlt source's reading side: chunks of landed objects, parsed ahead of dlt, in order."""

from __future__ import annotations

import pytest

from connector.landing import LandingStore
from pipelines.landing_source import read_ahead
from tests.landing_helpers import customer_event, envelope, land


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_read_ahead_yields_every_chunk_once_in_listing_order(tmp_path, workers):
    store = LandingStore(str(tmp_path))
    for n in range(7):
        land(store, [envelope(customer_event(f"c-{n}", xid=f"x-{n}-{i}")) for i in range(n + 1)])
    objects = store.list_objects("customers")

    # chunk_bytes=1: every object is a chunk of its own, so several are parsed at once
    chunks = list(read_ahead(store, objects, workers=workers, chunk_bytes=1))

    assert [chunk for chunk, _, _ in chunks] == [[obj] for obj in objects]
    for (obj,), lines, parsed in chunks:
        assert set(lines["landing_file"].to_pylist()) == {obj.key}
        events = parsed.customer_events
        assert set(events["landing_file"].to_pylist()) == {obj.key}
        assert events["line_no"].to_pylist() == list(range(1, events.num_rows + 1))
    xids = [xid for _, _, parsed in chunks for xid in parsed.customer_events["xid"].to_pylist()]
    assert sorted(xids) == sorted(f"x-{n}-{i}" for n in range(7) for i in range(n + 1))
