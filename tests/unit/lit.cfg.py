# Runs the GoogleTest binaries (names ending in "Tests") as lit tests, so
# that `check-moegen` runs every test and reports each GoogleTest case.
import os

import lit.formats

config.name = "moegen-unit"
config.suffixes = []
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moegen_obj_root, "tests", "unit")
config.test_format = lit.formats.GoogleTest(".", "Tests")
