"""Settings read `.env` before any variable: what `.env.example` documents works from the
file as from the environment, and the environment wins over the file."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHOW = (
    "import json; from django.conf import settings as s; print(json.dumps({"
    "'DATA_DIR': str(s.DATA_DIR), 'DATABASE': str(s.DATABASES['default']['NAME']), "
    "'MEDIA_ROOT': str(s.MEDIA_ROOT), 'STATIC_ROOT': str(s.STATIC_ROOT), 'DEBUG': s.DEBUG}))"
)
#: Variables these tests set, through the file or the environment; none come from outside.
READ = ("PORTAL_DATA_DIR", "DATABASE_URL", "MEDIA_ROOT", "STATIC_ROOT", "DEBUG")


def settings_with(env_file, **environment):
    """The settings `manage.py shell` sees with `env_file` as the `.env` (PORTAL_ENV_FILE)."""
    env = {k: v for k, v in os.environ.items() if k not in READ and k != "PORTAL_ENV_FILE"}
    env |= {"PORTAL_ENV_FILE": str(env_file), "SECRET_KEY": "x" * 50, **environment}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py's own
    shown = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SHOW],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout.strip().splitlines()[-1])


def test_portal_data_dir_set_in_the_env_file_is_used(tmp_path):
    data = tmp_path / "portal-data"
    env_file = tmp_path / ".env"
    env_file.write_text(f"DEBUG=true\nPORTAL_DATA_DIR={data}\n")
    shown = settings_with(env_file)
    assert shown["DATA_DIR"] == str(data)
    assert shown["DATABASE"] == str(data / "portal.sqlite3")  # settings derived from it too
    assert shown["MEDIA_ROOT"] == str(data / "media")
    assert shown["DEBUG"] is True


def test_the_environment_wins_over_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f"DEBUG=true\nPORTAL_DATA_DIR={tmp_path / 'from-file'}\n")
    shown = settings_with(env_file, PORTAL_DATA_DIR=str(tmp_path / "from-environment"))
    assert shown["DATA_DIR"] == str(tmp_path / "from-environment")


def test_env_example_copied_as_it_is_gives_the_defaults(tmp_path):
    """`.env.example` leaves the storage variables blank, meaning their defaults."""
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    shown = settings_with(env_file, DEBUG="true")
    assert shown["DATA_DIR"] == str(ROOT / "data")
    assert shown["DATABASE"] == str(ROOT / "data" / "portal.sqlite3")
    assert shown["MEDIA_ROOT"] == str(ROOT / "data" / "media")
    assert shown["STATIC_ROOT"] == str(ROOT / "staticfiles")


def test_an_env_file_that_is_not_there_stops_the_portal(tmp_path):
    missing = tmp_path / "nowhere.env"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env |= {"PORTAL_ENV_FILE": str(missing), "DEBUG": "true"}  # else a sound start
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"PORTAL_ENV_FILE names {missing}, which is not a file." in result.stderr
