"""The persistent privacy ledger: cap, durability and tamper detection."""

import json

import dp_accounting as dpa
import pytest

from fedsynth.common.accounting import (
    BudgetExceeded,
    CombinedAccountant,
    Ledger,
    LedgerCorrupt,
    dpsgd_event,
    exponential_event,
    gaussian_event,
    skellam_event,
)
from fedsynth.common.accounting import ledger as ledger_module

DELTA = 1e-6
SPENDS = [
    ("select", "exponential", exponential_event(0.1, count=5), {"round": 1}),
    ("measure", "gaussian", gaussian_event(25.0, count=4), {"round": 1, "sigma": 25.0, "survivors": 5}),
    ("measure", "skellam", skellam_event(300.0, 1, 1, count=4), {"round": 2, "survivors": [0, 1, 3]}),
    ("label", "dpsgd", dpsgd_event(2.0, 0.01, 200), {"round": 3, "note": "caf\u00e9\u2028"}),
]


def fill(path, cap=10.0):
    ledger = Ledger(path, cap, DELTA)
    for phase, mechanism, event, metadata in SPENDS:
        ledger.append(phase, mechanism, event, metadata)
    return ledger


def files(path):
    head = path.with_name(path.name + ".head")
    return path.read_bytes(), head.read_bytes() if head.exists() else None


def rewrite_lines(path, edit):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))


def test_round_trip(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = fill(path)
    reloaded = Ledger(path, 10.0, DELTA)
    assert reloaded.entries == ledger.entries
    assert [e.seq for e in reloaded.entries] == [1, 2, 3, 4]
    assert [(e.phase, e.mechanism, e.dp_event(), dict(e.metadata)) for e in reloaded.entries] == [
        (phase, mechanism, event, metadata) for phase, mechanism, event, metadata in SPENDS
    ]
    assert reloaded.entries[0].prev_hash == ledger_module.GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(reloaded.entries, reloaded.entries[1:]))
    assert reloaded.entries[0].time.endswith("+00:00")


def test_epsilon_after_reload_equals_before_and_the_accountants(tmp_path):
    path = tmp_path / "ledger.jsonl"
    before = fill(path).epsilon()
    after = Ledger(path, 10.0, DELTA).epsilon()
    assert after == before
    direct = CombinedAccountant()
    for _, _, event, _ in SPENDS:
        direct.compose(event)
    assert after == direct.epsilon(DELTA)
    print(f"\nledger epsilon: {after}")


def test_cap_refusal_writes_nothing(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = fill(path, cap=2.0)
    before = files(path)
    spent = ledger.epsilon()
    big = gaussian_event(1.0, count=10)
    assert ledger.would_exceed(big)
    with pytest.raises(BudgetExceeded, match=r"phase 'measure' would bring epsilon to [\d.]+ .*above the cap 2"):
        ledger.append("measure", "gaussian", big)
    assert files(path) == before
    assert ledger.epsilon() == spent and len(ledger) == len(SPENDS)
    assert Ledger(path, 2.0, DELTA).entries == ledger.entries


def test_check_is_a_dry_run(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = fill(path)
    before = files(path)
    small = gaussian_event(50.0)
    would = ledger.check(small)
    assert not ledger.would_exceed(small)
    assert files(path) == before and ledger.epsilon().epsilon < would.epsilon
    assert ledger.append("measure", "gaussian", small).seq == len(SPENDS) + 1
    assert ledger.epsilon() == would


def test_unserialisable_metadata_or_unsupported_event_writes_nothing(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = fill(path)
    before = files(path)
    with pytest.raises(ValueError):
        ledger.append("measure", "gaussian", gaussian_event(5.0), {"sigma": float("nan")})
    with pytest.raises(dpa.UnsupportedEventError):
        ledger.append("x", "unknown", dpa.UnsupportedDpEvent())
    assert files(path) == before


def _tamper_value(lines):
    entry = json.loads(lines[1])
    entry["metadata"]["sigma"] = 50.0
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    return lines


def _tamper_event(lines):
    lines[2] = lines[2].replace('"mu":300.0', '"mu":3000.0')
    return lines


@pytest.mark.parametrize(
    "edit, line",
    [
        (_tamper_value, 2),
        (_tamper_event, 3),
        (lambda lines: lines[:1] + lines[2:], 2),  # middle line deleted
        (lambda lines: [lines[1], lines[0]] + lines[2:], 1),  # reordered
        (lambda lines: lines[:-1] + [lines[-1][:-20]], 4),  # last line cut
        (lambda lines: lines[:-1] + [lines[-1][:-1]], 4),  # only its line end cut
        (lambda lines: lines[:2] + ["{not json\n"] + lines[3:], 3),
    ],
)
def test_tampering_is_detected_naming_the_line(tmp_path, edit, line):
    path = tmp_path / "ledger.jsonl"
    fill(path)
    rewrite_lines(path, edit)
    with pytest.raises(LedgerCorrupt, match=f"line {line}"):
        Ledger(path, 10.0, DELTA)


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_deleting_trailing_entries_is_detected_by_the_head(tmp_path, keep):
    path = tmp_path / "ledger.jsonl"
    fill(path)
    rewrite_lines(path, lambda lines: lines[:keep])
    with pytest.raises(LedgerCorrupt, match="truncated"):
        Ledger(path, 10.0, DELTA)


def test_deleted_ledger_or_head_is_detected(tmp_path):
    path = tmp_path / "ledger.jsonl"
    fill(path)
    head = path.with_name(path.name + ".head")
    head.unlink()
    with pytest.raises(LedgerCorrupt, match="missing"):
        Ledger(path, 10.0, DELTA)
    fill(tmp_path / "other.jsonl")
    (tmp_path / "other.jsonl").unlink()
    with pytest.raises(LedgerCorrupt, match="truncated"):
        Ledger(tmp_path / "other.jsonl", 10.0, DELTA)


@pytest.mark.parametrize("extra", [0, 1])
def test_substituted_valid_chain_is_detected_by_the_head(tmp_path, extra):
    """Another self-consistent ledger (as long, or one longer) copied over this one."""
    path, other = tmp_path / "ledger.jsonl", tmp_path / "other.jsonl"
    fill(path)
    forged = fill(other)
    for _ in range(extra):
        forged.append("measure", "gaussian", gaussian_event(40.0))
    path.write_bytes(other.read_bytes())
    with pytest.raises(LedgerCorrupt, match=f"line {len(SPENDS)}: hash differs from the head"):
        Ledger(path, 10.0, DELTA)


def test_crash_between_ledger_and_head_write_is_repaired(tmp_path, monkeypatch):
    path = tmp_path / "ledger.jsonl"
    ledger = fill(path)
    real_write = ledger_module._atomic_write

    def crash_on_head(target, text):
        if target.name.endswith(".head"):
            raise OSError("simulated crash")
        real_write(target, text)

    monkeypatch.setattr(ledger_module, "_atomic_write", crash_on_head)
    with pytest.raises(OSError):
        ledger.append("measure", "gaussian", gaussian_event(40.0), {"round": 4})
    monkeypatch.setattr(ledger_module, "_atomic_write", real_write)
    head = path.with_name(path.name + ".head")
    assert json.loads(head.read_text())["count"] == len(SPENDS)
    reloaded = Ledger(path, 10.0, DELTA)
    assert len(reloaded) == len(SPENDS) + 1
    assert json.loads(head.read_text()) == {"count": len(SPENDS) + 1, "hash": reloaded.entries[-1].hash}


def test_first_entry_without_head_is_repaired(tmp_path):
    path = tmp_path / "ledger.jsonl"
    Ledger(path, 10.0, DELTA).append("measure", "gaussian", gaussian_event(30.0))
    head = path.with_name(path.name + ".head")
    head.unlink()
    assert len(Ledger(path, 10.0, DELTA)) == 1 and head.exists()


def test_entries_are_read_only_copies(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = fill(path)
    ledger.entries[1].metadata["sigma"] = 1.0
    assert ledger.entries[1].metadata["sigma"] == 25.0
    with pytest.raises(AttributeError):
        ledger.entries[0].phase = "other"


def test_no_temp_files_left_behind_only_the_lock_file(tmp_path):
    fill(tmp_path / "ledger.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.jsonl", "ledger.jsonl.head", "ledger.jsonl.lock"]
