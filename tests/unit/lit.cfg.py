# Runs the GoogleTest binaries (names ending in "Tests") as lit tests, so
# that `check-moegen` runs every test and reports each GoogleTest case.
import os

import lit.formats

config.name = "moegen-unit"
config.suffixes = []
config.test_source_root = os.path.join(config.moegen_obj_root, "tests", "unit")
config.test_exec_root = os.path.join(config.moegen_obj_root, "tests", "unit")
config.test_format = lit.formats.GoogleTest(".", "Tests")

# A missing binary would make this suite silently empty: fail instead.
_binary = os.path.join(config.test_exec_root, "MoEGenUnitTests")
if not os.access(_binary, os.X_OK):
    lit_config.fatal("unit test binary not found: %s (build MoEGenUnitTests)" % _binary)

# A sanitizer build (-DMOEGEN_SANITIZE=...): feature `sanitizer`, and the
# sanitizers' options for every process a test starts: leaks are findings,
# UBSan stops at the first (CMakeLists.txt, MOEGEN_SANITIZE).
if config.moegen_sanitize:
    config.available_features.add("sanitizer")
    config.environment["ASAN_OPTIONS"] = (
        "detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0")
    config.environment["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    config.environment["MOEGEN_SANITIZED"] = "1"
