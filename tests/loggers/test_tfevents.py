"""The fast event-file pieces against tensorboard's own: checksums, record framing, Event bytes."""

from __future__ import annotations

import math
import random
import struct

from ember.loggers.tfevents import encode_records, masked_crc32c, scalar_events, scalar_records


def test_checksums_and_framing_match_tensorboards_writer():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    rng = random.Random(0)
    chunks = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 90))) for _ in range(300)]
    assert masked_crc32c(chunks).tolist() == [reference(c) for c in chunks]
    expected = b"".join(
        struct.pack("<Q", len(c))
        + struct.pack("<I", reference(struct.pack("<Q", len(c))))
        + c
        + struct.pack("<I", reference(c))
        for c in chunks
    )
    assert encode_records(chunks) == expected


def test_scalar_events_are_the_events_protobuf_would_write():
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    names = ("loss", "val/acc", "é")
    entries = [
        (3, 1234.5, names, (1.5, -2.25, 0.125)),
        (2**40, 1.0, (), ()),
        (7, 0.0, ("x" * 300,), (float("nan"),)),
        (300, 2.0, names, (1e40, 2.0, 3.0)),  # beyond float32: stored as inf, as protobuf does
    ]
    for (step, walltime, keys, values), raw in zip(entries, scalar_events(entries)):
        event = Event.FromString(raw)
        assert (event.step, event.wall_time) == (step, walltime)
        assert [v.tag for v in event.summary.value] == list(keys)
        got = [v.simple_value for v in event.summary.value]
        want = [
            v if math.isnan(v) else struct.unpack("<f", struct.pack("<f", v))[0] if abs(v) < 1e38 else math.inf
            for v in values
        ]
        assert all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, want))
        if step == 3:
            reference = Event(
                wall_time=walltime,
                step=step,
                summary=Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in zip(keys, values)]),
            )
            assert raw == reference.SerializeToString()


def test_scalar_records_batched_with_numpy_are_byte_for_byte_the_per_event_ones():
    rng = random.Random(1)
    one, three = ("loss",), ("a", "val/acc", "é")
    for _ in range(20):
        entries = []
        step = rng.choice([0, 100, 16000, 2**40])
        for _ in range(rng.randint(0, 300)):
            names = one if rng.random() < 0.9 else three  # runs of the same names, broken now and then
            step += rng.choice([1, 1, 1, 37, 5000])  # and steps crossing varint widths
            entries.append((step, 1000.0 + step, names, tuple(rng.uniform(-1e3, 1e3) for _ in names)))
        if len(entries) > 40:
            entries[10] = (entries[10][0], 1.0, one, (1e40,))
            entries[20] = (-5, 1.0, one, (1.0,))
            entries[30] = (entries[30][0], 1.0, one, (float("nan"),))
        assert scalar_records(entries) == encode_records(scalar_events(entries))
