"""Reading the API's JSON leniently, writing it as the Go client does, and the User-Agent."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from runscaler import __version__
from runscaler.github.models import (
    JitConfig,
    JobAssigned,
    JobAvailable,
    JobCompleted,
    JobStarted,
    ParseError,
    RunnerScaleSet,
    SessionInfo,
    Statistics,
    UserAgent,
    parse_message,
    parse_time,
)
from runscaler.github.transport import strip_bom

STATS = {
    "totalAvailableJobs": 1,
    "totalAcquiredJobs": 2,
    "totalAssignedJobs": 3,
    "totalRunningJobs": 4,
    "totalRegisteredRunners": 5,
    "totalBusyRunners": 6,
    "totalIdleRunners": 7,
}


def test_the_user_agent_names_runscaler_its_version_and_the_scale_set_once_known() -> None:
    v = __version__
    assert str(UserAgent()) == f"runscaler/{v} (listener) ScaleSetID/NA"
    assert str(UserAgent(scale_set_id=12)) == f"runscaler/{v} (listener) ScaleSetID/12"
    # Nothing borrowed from the Go library's identity.
    assert "kind" not in str(UserAgent(scale_set_id=12))


def test_statistics_read_every_field() -> None:
    assert Statistics.from_json(STATS) == Statistics(1, 2, 3, 4, 5, 6, 7)


def test_field_names_match_exactly_first_then_ignoring_case() -> None:
    data = {"ID": 9, "Name": "linux", "runnerGroupID": 2, "runnersetting": {"DisableUpdate": True}}
    scale_set = RunnerScaleSet.from_json(data)
    assert (scale_set.id, scale_set.name, scale_set.runner_group_id) == (9, "linux", 2)
    assert scale_set.disable_update is True
    assert RunnerScaleSet.from_json({"name": "exact", "NAME": "folded"}).name == "exact"


def test_a_scale_set_reads_labels_settings_and_statistics_and_ignores_the_rest() -> None:
    scale_set = RunnerScaleSet.from_json(
        {
            "id": 3,
            "name": "linux-x64",
            "runnerGroupId": 1,
            "runnerGroupName": "Default",
            "labels": [{"type": "System", "name": "linux-x64"}, {"name": "gpu"}],
            "RunnerSetting": {"disableUpdate": True, "ephemeral": True},
            "createdOn": "2024-05-01T10:00:00.1234567Z",
            "runnerJitConfigUrl": "http://x",
            "statistics": STATS,
            "somethingNew": {"nested": [1]},
        }
    )
    assert scale_set == RunnerScaleSet(
        3, "linux-x64", 1, "Default", ("linux-x64", "gpu"), True, Statistics(1, 2, 3, 4, 5, 6, 7)
    )


def test_a_field_of_the_wrong_type_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="id is not an integer"):
        RunnerScaleSet.from_json({"id": "3"})


def test_the_create_body_is_the_go_clients() -> None:
    body = RunnerScaleSet(name="my-set", runner_group_id=1).to_create_json()
    assert json.dumps(body, separators=(",", ":")) == (
        '{"name":"my-set","runnerGroupId":1,"labels":[{"type":"System","name":"my-set"}],'
        '"RunnerSetting":{"disableUpdate":true},"createdOn":"0001-01-01T00:00:00Z"}'
    )


def test_given_labels_are_sent_as_system_labels() -> None:
    body = RunnerScaleSet(name="s", labels=("a", "b"), disable_update=False).to_create_json()
    assert body["labels"] == [{"type": "System", "name": "a"}, {"type": "System", "name": "b"}]
    assert body["RunnerSetting"] == {}


def test_a_session_needs_its_id_queue_url_and_token() -> None:
    info = SessionInfo.from_json(
        {
            "sessionId": "5d6c1e8a-0000-0000-0000-000000000001",
            "ownerName": "host-1",
            "runnerScaleSet": {"id": 1, "name": "s"},
            "messageQueueUrl": "http://127.0.0.1:1/q",
            "messageQueueAccessToken": "mq-token-value",
            "statistics": STATS,
        }
    )
    assert info.owner_name == "host-1"
    assert "mq-token-value" not in repr(info)
    with pytest.raises(ParseError, match="no messageQueueUrl, messageQueueAccessToken"):
        SessionInfo.from_json({"sessionId": "x"})


def test_a_jit_config_hides_its_encoded_form() -> None:
    config = JitConfig.from_json(
        {"runner": {"id": 4, "name": "r", "runnerScaleSetId": 2}, "encodedJITConfig": "ZW5j"},
        scale_set_id=2,
    )
    assert (config.runner_id, config.runner_name, config.scale_set_id) == (4, "r", 2)
    assert "ZW5j" not in repr(config)


def _message(jobs: list[dict[str, object]] | None, **extra: object) -> dict[str, object]:
    message: dict[str, object] = {
        "messageId": 17,
        "messageType": "RunnerScaleSetJobMessages",
        "statistics": STATS,
    }
    if jobs is not None:
        message["body"] = json.dumps(jobs)
    message.update(extra)
    return message


def test_a_message_carries_typed_job_events_and_skips_unknown_ones() -> None:
    base = {
        "runnerRequestId": 11,
        "repositoryName": "app",
        "ownerName": "acme",
        "jobId": "a1b2",
        "jobWorkflowRef": "acme/app/.github/workflows/ci.yml@refs/heads/main",
        "jobDisplayName": "build",
        "workflowRunId": 99,
        "eventName": "push",
        "requestLabels": ["self-hosted", "linux"],
        "queueTime": "2024-05-01T10:00:00Z",
        "scaleSetAssignTime": "0001-01-01T00:00:00Z",
        "runnerAssignTime": None,
    }
    message = parse_message(
        _message(
            [
                {**base, "messageType": "JobAvailable", "acquireJobUrl": "http://x/acquire"},
                {**base, "messageType": "JobAssigned"},
                {**base, "messageType": "JobStarted", "runnerId": 5, "runnerName": "r-1"},
                {
                    **base,
                    "messageType": "JobCompleted",
                    "result": "succeeded",
                    "runnerId": 5,
                    "runnerName": "r-1",
                    "finishTime": "2024-05-01T10:05:00.5+02:00",
                },
                {**base, "messageType": "JobSomethingNew"},
            ]
        ),
        fallback_statistics=Statistics(),
    )
    assert message.message_id == 17
    assert message.statistics.total_assigned_jobs == 3
    available, assigned, started, completed = message.jobs
    assert isinstance(available, JobAvailable)
    assert available.acquire_job_url == "http://x/acquire"
    assert available.request_labels == ("self-hosted", "linux")
    assert available.queue_time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert available.scale_set_assign_time is None
    assert type(assigned) is JobAssigned
    assert isinstance(started, JobStarted)
    assert (started.runner_id, started.runner_name, started.job_id) == (5, "r-1", "a1b2")
    assert isinstance(completed, JobCompleted)
    assert completed.result == "succeeded"
    assert completed.finish_time is not None
    assert completed.finish_time.utcoffset() is not None


def test_a_message_without_body_has_no_jobs() -> None:
    assert parse_message(_message(None), fallback_statistics=Statistics()).jobs == ()
    assert parse_message(_message(None, body=""), fallback_statistics=Statistics()).jobs == ()


def test_a_message_without_statistics_keeps_the_last_known() -> None:
    last = Statistics(total_assigned_jobs=4)
    message = _message([])
    del message["statistics"]
    assert parse_message(message, fallback_statistics=last).statistics == last


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (_message([], messageType="SomethingElse"), "unsupported message type 'SomethingElse'"),
        (_message(None, body='{"not": "a list"}'), "not a JSON array"),
        (_message(None, body="[{"), "not JSON"),
        (_message([{"messageType": "JobStarted", "runnerId": "five"}]), "runnerId"),
        (_message([{"messageType": "JobAssigned", "queueTime": ""}]), "queueTime"),
    ],
)
def test_malformed_messages_are_parse_errors(message: dict[str, object], error: str) -> None:
    with pytest.raises(ParseError, match=error):
        parse_message(message, fallback_statistics=Statistics())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.1234567Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
        (None, None),
    ],
)
def test_timestamps(text: str | None, expected: datetime | None) -> None:
    assert parse_time(text) == expected


def test_only_a_leading_bom_is_stripped() -> None:
    assert strip_bom(b"\xef\xbb\xbf{}") == b"{}"
    assert strip_bom(b"{}") == b"{}"
    assert strip_bom(b"{\xef\xbb\xbf}") == b"{\xef\xbb\xbf}"
