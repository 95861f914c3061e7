"""``--log-level`` sets fedsynth's loggers; Flower follows it during a simulation, minus one banner."""

import logging
from pathlib import Path

import pytest
from flwr.supercore.logger import warn_deprecated_feature

import fedsynth
from fedsynth.cli import main
from fedsynth.simulations.engine import _flower_logging

DATA = Path(fedsynth.__file__).parent / "data"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def flower_records():
    records, flower = Records(), logging.getLogger("flwr")
    flower.addHandler(records)
    yield records
    flower.removeHandler(records)
    logging.getLogger("fedsynth").setLevel(logging.NOTSET)


def test_log_level_sets_fedsynths_loggers(capsys):
    assert main(["--log-level", "error", "schema", "validate", str(DATA / "adult.csv"),
                 "--schema", str(DATA / "adult.schema.yaml")]) == 0
    assert logging.getLogger("fedsynth.server.job").getEffectiveLevel() == logging.ERROR
    logging.getLogger("fedsynth").setLevel(logging.NOTSET)


def test_flower_logs_at_fedsynths_level_without_the_run_simulation_banner(flower_records):
    logging.getLogger("fedsynth").setLevel(logging.WARNING)
    with _flower_logging():
        warn_deprecated_feature("The `run_simulation` function is deprecated and will be removed in a future "
                                "version of Flower. Please use `flwr run` in the CLI instead.")
        warn_deprecated_feature("Passing `something_else` is deprecated.")
        logging.getLogger("flwr").info("an INFO line")
    assert len(flower_records.messages) == 1 and "`something_else`" in flower_records.messages[0]
    logging.getLogger("fedsynth").setLevel(logging.DEBUG)
    with _flower_logging():
        logging.getLogger("flwr").debug("a DEBUG line")
    assert flower_records.messages[-1] == "a DEBUG line"
