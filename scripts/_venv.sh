# Sourced by scripts/course.sh and scripts/test.sh: make $VENV hold sftviz with the extras "$@".
#
# The first run creates the virtual environment and installs; a later run with pyproject.toml
# unchanged installs nothing and needs no network (a stamp in $VENV records what was installed, and
# the package is installed editable, so changes to sftviz/ need no reinstall). The build backend
# (setuptools) is installed into $VENV and used with --no-build-isolation, so even a reinstall does
# not download a build environment.
sftviz_venv() {
  local extras stamp want
  extras="$(IFS=,; echo "$*")"
  stamp="$VENV/.sftviz-installed"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[sftviz] creating the virtual environment $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')"
  local missing=()
  for e in "$@"; do
    grep -qxF "$e $want" "$stamp" 2>/dev/null || missing+=("$e")
  done
  if [ ${#missing[@]} -eq 0 ] && "$VENV/bin/python" -c "import sftviz" 2>/dev/null; then
    echo "[sftviz] $VENV is up to date (sftviz[$extras]); nothing to install"
    return 0
  fi
  echo "[sftviz] installing sftviz[$extras] into $VENV"
  "$VENV/bin/python" -m pip install --quiet "setuptools>=77"
  "$VENV/bin/python" -m pip install --quiet --no-build-isolation -e ".[$extras]"
  touch "$stamp"
  for e in "$@"; do
    grep -vx "$e .*" "$stamp" > "$stamp.new" || true
    echo "$e $want" >> "$stamp.new"
    mv "$stamp.new" "$stamp"
  done
}
