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
