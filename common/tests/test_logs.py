"""JSON log lines carry the service and the request id."""

import json
import logging

from ticketing_common.logs import configure_logging
from ticketing_common.requestid import set_request_id


def test_log_lines_are_json_with_the_request_id(capsys) -> None:
    configure_logging("probe", "INFO")
    set_request_id("req-log-1")
    try:
        logging.getLogger("probe.test").info("hello %s", "world")
    finally:
        set_request_id(None)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["message"] == "hello world"
    assert record["service"] == "probe"
    assert record["request_id"] == "req-log-1"
    assert record["level"] == "INFO"
