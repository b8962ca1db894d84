import pytest

from stages.core import launch


def test_launch_command_wraps_the_stage():
    command = launch.launch_command(["extract", "labeled"], "torchrun --nproc_per_node 2")
    assert command == ["torchrun", "--nproc_per_node", "2", "-m", "stages", "extract", "labeled"]


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({}, ["extract", "labeled"]),  # no launcher asked for
        ({"PROBEKD_LAUNCHER": "torchrun --nproc_per_node 2", "WORLD_SIZE": "2"}, ["extract", "x"]),  # child
        ({"PROBEKD_LAUNCHER": "torchrun --nproc_per_node 2"}, ["probe"]),  # not a data-parallel stage
        ({"PROBEKD_LAUNCHER": "torchrun --nproc_per_node 2"}, ["train", "--help"]),
    ],
)
def test_no_relaunch(monkeypatch, env, args):
    monkeypatch.delenv("PROBEKD_LAUNCHER", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(launch.subprocess, "call", lambda command: pytest.fail(f"relaunched {command}"))
    launch.relaunch_if_requested(args)


def test_relaunch_exits_with_the_launchers_status(monkeypatch):
    monkeypatch.setenv("PROBEKD_LAUNCHER", "torchrun --nproc_per_node 2")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    calls = []
    monkeypatch.setattr(launch.subprocess, "call", lambda command: calls.append(command) or 3)
    with pytest.raises(SystemExit) as exited:
        launch.relaunch_if_requested(["train", "gold"])
    assert exited.value.code == 3
    assert calls == [["torchrun", "--nproc_per_node", "2", "-m", "stages", "train", "gold"]]
