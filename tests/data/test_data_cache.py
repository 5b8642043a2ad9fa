"""Where the cache lives: explicit argument, then $LARGEMETA_DATA_DIR, then the OS's per-user cache folder."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from largemeta.data.store.cache import DATA_DIR_ENV, data_dir


def test_argument_then_environment_then_platform_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert data_dir() == tmp_path / "env"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir("~/mine") == tmp_path / "home" / "mine"
    monkeypatch.setenv(DATA_DIR_ENV, "")  # empty counts as unset
    assert data_dir() == Path(platformdirs.user_cache_dir("largemeta", appauthor=False))


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG layout is Linux's")
def test_linux_folder_is_unchanged_from_v01(tmp_path, monkeypatch):
    """$XDG_CACHE_HOME/largemeta, else ~/.cache/largemeta: where v0.1 put it, so existing caches are found."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "largemeta"
    assert not (tmp_path / "xdg").exists()  # resolving the folder creates nothing
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert data_dir() == tmp_path / "home" / ".cache" / "largemeta"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_dir() == tmp_path / "home" / ".cache" / "largemeta"
