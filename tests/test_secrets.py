"""No credential in any file, folder name, log or console line.

The rules (``outro_sweep.files.masking``) are checked in process; then the real command runs
in a subprocess for each kind of secret (a key given on the command line, environment names
that only the word rule catches, a short value, an error path), with the basic launcher and
with ``hydra/launcher=local``, and every byte under the outputs folder (``.wandb`` files, W&B
debug logs, ``.hydra/*``, ``multirun.yaml``, submitit pickles and folder names included) and
of the captured console is searched for every secret value. W&B runs offline (its server
cannot run here); its offline files are what it would upload.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from outro_sweep.cell.identity import identity_of
from outro_sweep.cell.job_names import cell_dirname
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.errors import ConfigError
from outro_sweep.files.atomic import write_json_atomic
from outro_sweep.files.masked_output import MaskingStream, masking_record_factory
from outro_sweep.files.masking import MASK, is_secret_name, mask, mask_override, mask_text, secret_values
from outro_sweep.sweep.secret_overrides import ENV_PREFIX, move_secrets_to_environment
from tests.test_sweep_e2e import run_cli
from tests.wandb_offline import find_runs, read_run

SECRET_NAMES = ["api_key", "judge.api_key", "apiKey", "HF_TOKEN", "HFToken", "WANDB_API_KEY", "OPENAI_KEY", "DB_PASS",
                "PRIVATE_KEY", "X_AUTH", "SVC_CREDENTIAL", "AWS_CREDENTIALS", "client_secret", "PGPASSWORD",
                "db_password", "passphrase", "GITHUB_TOKEN_2", f"{ENV_PREFIX}0", "token_type_ids"]
# Names that contain a secret word as a substring or a plural, and are not credentials.
NOT_SECRET_NAMES = ["max_new_tokens", "exclude_keys", "passes", "bypass", "author", "keyboard", "monkey",
                    "use_chat_template", "TOKENIZERS_PARALLELISM", "SSH_ASKPASS", "keys", "tokens"]


# -- the name rule ---------------------------------------------------------------------------
def _keys(node, out: set) -> set:
    if isinstance(node, dict):
        for key, value in node.items():
            out.add(str(key))
            _keys(value, out)
    elif isinstance(node, list):
        for value in node:
            _keys(value, out)
    return out


def conf_keys() -> set[str]:
    """Every key of every YAML file in conf/, and of the composed config with Hydra's own node
    (for each launcher and the judge, whose groups add keys)."""
    from outro_sweep.sweep.slurm_launcher import register_launcher  # stores hydra/launcher=outro_slurm
    from outro_sweep.sweep.sweeper import register_plugin

    keys: set[str] = set()
    for path in CONF_DIR.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            _keys(document, keys)
    register_plugin()
    register_launcher()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for overrides in ([], ["hydra/launcher=local"], ["hydra/launcher=slurm"], ["judge=llm"]):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            _keys(OmegaConf.to_container(cfg, resolve=False), keys)
    return keys


def test_only_the_credential_key_of_conf_is_secret_named():
    keys = conf_keys()
    assert {"max_new_tokens", "use_chat_template", "exclude_keys", "entity", "project", "tags"} <= keys
    assert len(keys) > 150  # conf/ and Hydra's node were both read
    assert sorted(k for k in keys if is_secret_name(k)) == ["api_key"]  # logger.api_key, masked on purpose


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", NOT_SECRET_NAMES)
def test_names_that_are_not_secret(name):
    assert not is_secret_name(name)


# -- the value rule --------------------------------------------------------------------------
def test_values_of_secret_named_variables_only(monkeypatch):
    monkeypatch.setenv("OPENAI_KEY", "oai-0123456789")
    monkeypatch.setenv("DB_PASS", "Qz7k")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "true")  # a switch, not a credential
    monkeypatch.setenv("OUTRO_PLAIN", "plainvalue123")
    values = secret_values()
    assert "oai-0123456789" in values and "Qz7k" in values
    assert "true" not in values and "plainvalue123" not in values
    assert values.index("oai-0123456789") < values.index("Qz7k")  # longest first


def test_long_values_anywhere_short_ones_as_words_tiny_ones_as_whole_values():
    values = ["sk-0123456789", "Qz7k", "x1"]
    assert mask_text("key=sk-0123456789, again:xsk-0123456789y", values) == "key=***, again:x***y"
    assert mask_text("pw Qz7k, /data/Qz7k/x", values) == "pw ***, /data/***/x"
    assert mask_text("inside aQz7kb or Qz7k_1", values) == "inside aQz7kb or Qz7k_1"  # not a whole word
    assert mask_text("x1 stays in text", values) == "x1 stays in text"
    assert mask({"a": "x1", "b": "ax1", "c": "pw Qz7k"}, values) == {"a": MASK, "b": "ax1", "c": "pw ***"}


def test_mask_by_key_name_at_any_depth():
    config = {"judge": {"api_key": "abc", "model": {"path": "/m"}}, "outer": {"inner": {"DB_PASS": 12345}},
              "credentials": {"user": "u", "list": ["a", "b"], "flag": True, "none": None},
              "max_new_tokens": 8, "token": None}
    assert mask(config, values=[]) == {
        "judge": {"api_key": MASK, "model": {"path": "/m"}}, "outer": {"inner": {"DB_PASS": MASK}},
        "credentials": {"user": MASK, "list": [MASK, MASK], "flag": True, "none": None},
        "max_new_tokens": 8, "token": None}


@pytest.mark.parametrize("secret", ["1234", "123456"])
def test_json_files_are_masked_as_data_and_stay_valid(tmp_path, monkeypatch, secret):
    """A numeric credential leaves numbers alone (masking JSON text would break the file)."""
    monkeypatch.setenv("DB_PASS", secret)
    payload = {"n": int(secret), "seconds": float(f"0.{secret}"), "error": f"bad value {secret} for x", "api_key": "k"}
    write_json_atomic(tmp_path / "m.json", payload)
    assert json.loads((tmp_path / "m.json").read_text()) == {**payload, "error": "bad value *** for x", "api_key": MASK}


def test_overrides_for_display_and_folder_names(monkeypatch):
    monkeypatch.setenv("OPENAI_KEY", "oai-0123456789")
    assert mask_override("+judge.api_key=${oc.env:X}") == "+judge.api_key=***"
    assert mask_override("+note=oai-0123456789") == "+note=***"
    assert mask_override("outro.alpha=3") == "outro.alpha=3"
    name = cell_dirname(["+judge.api_key=sk-0123456789", "outro.alpha=3", "paths.output_dir=/x"])
    assert name == "+judge.api_key=___,outro.alpha=3" and "sk-" not in name


def test_identity_is_computed_unmasked(monkeypatch):
    """Two different cells whose settings equal secret values keep different identities."""
    monkeypatch.setenv("A_TOKEN", "generate")
    monkeypatch.setenv("B_TOKEN", "logits")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        generate = compose("config", overrides=["benchmark.scoring=generate"])
        logits = compose("config", overrides=["benchmark.scoring=logits"])
    assert identity_of(generate) != identity_of(logits)


# -- the command line ------------------------------------------------------------------------
def test_a_secret_override_moves_into_the_environment(monkeypatch):
    for n in range(2):  # restored (unset) after the test
        monkeypatch.setenv(f"{ENV_PREFIX}{n}", "")
    argv = ["-m", "+judge.api_key=sk-0123456789", "outro.alpha=0.1,0.3", "+db.password=1234", "-cn", "config",
            "+x.token=${oc.env:HF_TOKEN}"]
    moved = move_secrets_to_environment(argv)
    assert moved == ["-m", f"+judge.api_key=${{oc.env:{ENV_PREFIX}0}}", "outro.alpha=0.1,0.3",
                     f"+db.password='${{oc.decode:${{oc.env:{ENV_PREFIX}1}}}}'", "-cn", "config",
                     "+x.token=${oc.env:HF_TOKEN}"]
    assert os.environ[f"{ENV_PREFIX}0"] == "sk-0123456789" and os.environ[f"{ENV_PREFIX}1"] == "1234"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[moved[1], moved[3]])
    assert cfg.judge.api_key == "sk-0123456789" and cfg.db.password == 1234  # the value and its type


def test_a_sweep_over_a_secret_key_is_refused_without_its_values():
    with pytest.raises(ConfigError) as caught:
        move_secrets_to_environment(["-m", "+judge.api_key=sk-aaaaaaaa,sk-bbbbbbbb"])
    message = str(caught.value)
    assert "judge.api_key" in message and "sweep" in message and "sk-" not in message and "\n" not in message


# -- the console and log boundary ------------------------------------------------------------
def test_console_masks_a_secret_written_in_pieces(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh123")
    sink = io.StringIO()
    stream = MaskingStream(sink)
    stream.write("token hf_abcd")
    stream.write("efgh123 end\npartial hf_abcdefgh123")
    assert sink.getvalue() == "token *** end\n"
    stream.flush()
    assert sink.getvalue() == "token *** end\npartial ***"


def test_log_records_and_tracebacks_are_masked(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh123")
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    logger = logging.getLogger("tests.test_secrets.boundary")
    logger.addHandler(handler)
    logger.propagate = False
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(masking_record_factory(previous))
    try:
        logger.warning("loading %s", "hf_abcdefgh123")
        try:
            raise ValueError("bad layer hf_abcdefgh123")
        except ValueError:
            logger.exception("cell failed")
    finally:
        logging.setLogRecordFactory(previous)
        logger.removeHandler(handler)
    text = sink.getvalue()
    assert "loading ***" in text and "ValueError: bad layer ***" in text and "hf_abcdefgh123" not in text


# -- the real command ------------------------------------------------------------------------
def scan(root: Path, console: str, secrets: list[str]) -> tuple[int, int, list[str]]:
    """(files, bytes, hits): every file under ``root``, every path name, the files that links
    point to outside ``root`` (W&B's debug-core.log lives in ~/.cache/wandb), and the console,
    searched for every secret."""
    files, size, hits = 0, 0, []
    for path in sorted(root.rglob("*")):
        for secret in secrets:
            if secret in str(path.relative_to(root)):
                hits.append(f"{secret!r} in the name {path}")
        outside = path.is_symlink() and not path.resolve().is_relative_to(root.resolve())
        if path.is_file() and (outside or not path.is_symlink()):
            data = path.read_bytes()
            files, size = files + 1, size + len(data)
            hits += [f"{secret!r} in {path}" for secret in secrets if secret.encode() in data]
    hits += [f"{secret!r} on the console" for secret in secrets if secret in console]
    print(f"\nscanned {files} files, {size} bytes and the console ({len(console)} characters): {len(hits)} hits")
    return files, size, hits


LIGHT = ["benchmark.limit=4", "benchmark.scoring=logits"]
# kind -> (arguments, environment, secret values, expected exit code)
KINDS = {
    "key on the command line": (["logger.api_key=sk-cmd7Q2x9ZpLw"], {}, ["sk-cmd7Q2x9ZpLw"], 0),
    "environment names outside the old pattern": (
        ["+note=a ${oc.env:OPENAI_KEY} ${oc.env:DB_PASS} ${oc.env:PRIVATE_KEY} ${oc.env:X_AUTH} b",
         "+extra=${oc.env:SVC_CREDENTIAL}", "logger.tags=[${oc.env:OPENAI_KEY}]"],
        {"OPENAI_KEY": "oaiK4T9mW2xRv", "DB_PASS": "dbP8vN3qL7s", "PRIVATE_KEY": "pkY5hJ2wQ9e",
         "X_AUTH": "xaU3kF8zR1m", "SVC_CREDENTIAL": "svC6tB4nH0y"},
        ["oaiK4T9mW2xRv", "dbP8vN3qL7s", "pkY5hJ2wQ9e", "xaU3kF8zR1m", "svC6tB4nH0y"], 0),
    "short value": (["+short=${oc.env:DB_PASS}", "+note=pw ${oc.env:DB_PASS} end", "logger.tags=[${oc.env:DB_PASS}]"],
                    {"DB_PASS": "Qz7k"}, ["Qz7k"], 0),
    "error path": (["outro.layer=${oc.env:HF_TOKEN}"], {"HF_TOKEN": "hf_eRr8Kq3LmZ"}, ["hf_eRr8Kq3LmZ"], 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_no_secret_anywhere_basic_launcher(kind, tmp_path):
    args, env, secrets, code = KINDS[kind]
    result = run_cli([*args, *LIGHT], tmp_path, extra_env=env)
    assert result.returncode == code, result.stderr[-3000:]
    files, size, hits = scan(tmp_path, result.stdout + result.stderr, secrets)
    assert hits == []
    if code == 0:  # the cell ran: its config and W&B run hold the masks
        assert any(p.parent.name == ".hydra" for p in tmp_path.rglob("*.yaml"))
        assert {p.name for p in tmp_path.rglob("*")} >= {"debug.log", "debug-internal.log", "config.yaml"}
        (run_file,) = find_runs(tmp_path / "cells")
        run = read_run(run_file)
        config = yaml.safe_load(next((tmp_path / "cells").glob("*/config.yaml")).read_text())
        if kind == "key on the command line":
            assert config["logger"]["api_key"] == run.config["logger"]["api_key"] == MASK
            assert "api_key" not in run.name  # logger.* does not define a cell, so it names nothing
            overrides = next(tmp_path.rglob(".hydra/overrides.yaml")).read_text()
            assert f"logger.api_key=${{oc.env:{ENV_PREFIX}0}}" in overrides
        else:
            assert MASK in config["note"] and run.config["logger"]["tags"] == [MASK]
    else:  # the one error line names the key with the value masked; refused before any file exists
        assert result.stderr.startswith(f"error: outro.layer={MASK} is invalid")
        assert result.stderr.count("\n") == 1 and not (tmp_path / "cells").exists()


@pytest.mark.slow
def test_no_secret_anywhere_local_launcher(tmp_path):
    """The three kinds of a cell that runs, in one cell process of the local launcher."""
    env = {**KINDS["environment names outside the old pattern"][1], **KINDS["short value"][1]}
    secrets = [*KINDS["key on the command line"][2], *env.values()]
    args = [*KINDS["key on the command line"][0], "+extra=${oc.env:SVC_CREDENTIAL}", "+short=${oc.env:DB_PASS}",
            "+note=a ${oc.env:OPENAI_KEY} ${oc.env:PRIVATE_KEY} ${oc.env:X_AUTH} b ${oc.env:DB_PASS} end",
            "logger.tags=[${oc.env:OPENAI_KEY},${oc.env:DB_PASS}]"]
    result = run_cli(["-m", "hydra/launcher=local", "baseline=false", *args, *LIGHT], tmp_path, extra_env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    files, size, hits = scan(tmp_path, result.stdout + result.stderr, secrets)
    assert hits == []
    names = {p.name for p in tmp_path.rglob("*")}
    assert "multirun.yaml" in names and any(n.endswith("_submitted.pkl") for n in names)
    assert any(n.endswith(".wandb") for n in names)
    (job,) = [p for p in tmp_path.glob("multirun/*/*/*") if (p / ".hydra").is_dir()]
    assert "api_key" not in job.name  # logger.* does not define a cell (folder-name masking: test_overrides_for_display_and_folder_names)


@pytest.mark.slow
def test_a_sweep_over_a_secret_key_gets_one_line(tmp_path):
    result = run_cli(["-m", "logger.api_key=sk-aaaa1111,sk-bbbb2222", *LIGHT], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "logger.api_key" in result.stderr
    assert "sk-" not in result.stdout + result.stderr and not any(tmp_path.iterdir())
