"""state_dir: one folder for durable state, relative to the config file like other paths."""

from pathlib import Path

from poly_ray.config import default_state_dir, state_path, validate


def test_default_is_the_users_data_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "poly-ray"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_state_dir() == Path("~/.local/share/poly-ray")


def test_relative_state_dir_is_read_from_the_config_folder(tmp_path):
    cfg = validate({"state_dir": "state"}, base_dir=tmp_path)
    assert cfg.state_dir == tmp_path / "state"
    kv = state_path(cfg, "kv", "gemma")
    assert kv == tmp_path / "state" / "kv" / "gemma" and kv.is_dir()


def test_environment_overrides_state_dir(tmp_path):
    cfg = validate({}, env={"POLY_STATE_DIR": str(tmp_path / "elsewhere")}, base_dir=tmp_path)
    assert cfg.state_dir == tmp_path / "elsewhere"
