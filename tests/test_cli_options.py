"""cli/options.py: each option group declared once, expanded into the commands, defaults from the library."""

from typing import Annotated

import json
import pytest
import typer
from typer.main import get_command

from scoutdoc.cli import app
from scoutdoc.cli.options import ENGINE, GENERATION, INGEST, EngineChoice, Generation, expand_options
from scoutdoc.engines import GenerationParams, RuntimeOptions
from scoutdoc.ingest import IngestOptions

ANSWER_COMMANDS = ("ask", "summarize", "chat", "batch")


def command(*path: str):
    cmd = get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def flags(cmd) -> list[str]:
    return [opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)]


def defaults(cmd) -> dict[str, object]:
    return {p.name: p.default for p in cmd.params}


@pytest.mark.parametrize("name", ANSWER_COMMANDS)
def test_answer_commands_declare_every_flag_once_and_all_groups(name):
    cmd = command(name)
    seen = flags(cmd)
    assert len(seen) == len(set(seen))
    groups = [g.parameters() for g in (ENGINE, GENERATION, INGEST)]
    assert {p.name for group in groups for p in group} <= {p.name for p in cmd.params}


def test_shared_defaults_come_from_the_library_dataclasses():
    runtime, params = RuntimeOptions(), GenerationParams()
    for name in ANSWER_COMMANDS:
        d = defaults(command(name))
        assert (d["dtype"], d["device"], d["attn"]) == (runtime.dtype, runtime.device, runtime.attn)
        assert (d["temperature"], d["top_p"]) == (params.temperature, params.top_p)
    assert [defaults(command(n))["max_tokens"] for n in ANSWER_COMMANDS] == [params.max_tokens, 768, params.max_tokens, 256]


def test_models_info_plans_with_the_defaults_ask_runs_with():
    ask, info = defaults(command("ask")), defaults(command("models", "info"))
    planned = {"device", "dtype", "kv_dtype", "kv_device_budget", "kv_host_budget", "kv_disk", "prefill_chunk"}
    assert planned <= info.keys()
    assert {k: info[k] for k in planned} == {k: ask[k] for k in planned}
    assert "attn" not in info and "model" not in info


def test_expand_options_builds_the_group_objects():
    seen = {}

    @expand_options
    def probe(
        *,
        choice: Annotated[EngineChoice, ENGINE],
        gen: Annotated[Generation, GENERATION.with_defaults(max_tokens=7)],
        options: Annotated[IngestOptions, INGEST],
    ) -> None:
        seen.update(choice=choice, gen=gen, options=options)

    cli = typer.Typer()
    cli.command()(probe)
    cli.command("other")(lambda: None)
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli, ["probe", "--dtype", "bfloat16", "--kv-disk", "/tmp/kv", "--exclude", "*.md",
                                      "--max-file-size", "1k", "--seed", "3", "--engine", "remote"])
    assert result.exit_code == 0, result.output
    assert seen["choice"].engine == "remote" and seen["choice"].runtime.dtype == "bfloat16"
    assert str(seen["choice"].runtime.kv_disk) == "/tmp/kv"
    assert seen["gen"].params == GenerationParams(max_tokens=7, seed=3) and seen["gen"].system is None
    assert seen["options"].exclude == ("*.md",) and seen["options"].max_file_size == 1024


def test_an_option_declared_twice_is_refused():
    with pytest.raises(TypeError, match="seed"):

        @expand_options
        def twice(seed: int = 0, *, gen: Annotated[Generation, GENERATION]) -> None:
            pass


def test_follow_up_takes_engine_model_and_server_from_its_session():
    record = {"engine": "remote", "model": "served", "base_url": "http://h/v1", "context_limit": 4096}
    choice = EngineChoice(api_key="k").for_session(record)
    assert (choice.engine, choice.model, choice.base_url, choice.context_limit, choice.api_key) == ("remote", "served", "http://h/v1", 4096, "k")
    mine = EngineChoice(model="mine", base_url="http://other/v1").for_session(record)
    assert (mine.model, mine.base_url) == ("mine", "http://other/v1")
    local = EngineChoice().for_session({"engine": "", "model": "", "base_url": "http://h/v1", "context_limit": 9})
    assert (local.engine, local.model, local.base_url, local.context_limit) == ("embedded", None, None, None)


def test_follow_up_runs_the_embedded_engine_as_its_session_did_unless_told_otherwise():
    from scoutdoc.engines import RuntimeOptions

    started = EngineChoice(runtime=RuntimeOptions(dtype="float32", quantize="none", kv_dtype="bfloat16"))
    record = {"engine": "embedded", "model": "", "base_url": "", "context_limit": 8192,
              "runtime": json.dumps(started.runtime_record())}
    follow = EngineChoice().for_session(record).runtime
    assert (follow.dtype, follow.quantize, follow.kv_dtype) == ("float32", "none", "bfloat16")
    told = EngineChoice(runtime=RuntimeOptions(dtype="bfloat16")).for_session(record).runtime
    assert (told.dtype, told.quantize) == ("bfloat16", "none")  # what the follow-up names wins
    older = EngineChoice().for_session({**record, "runtime": ""}).runtime  # a session from before v7
    assert (older.dtype, older.quantize) == (RuntimeOptions().dtype, RuntimeOptions().quantize)
