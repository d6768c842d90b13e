# lit configuration of moegen's codegen and CLI tests.
import os

import lit.formats
from lit.llvm import llvm_config

config.name = "moegen"
# External bash: the CLI tests check exit codes and files with shell tests.
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moegen_obj_root, "tests", "lit")

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.moegen_tools_dir, append_path=True)

config.substitutions.append(("%src_root", config.moegen_src_root))
config.substitutions.append(("%templates", os.path.join(config.moegen_src_root, "templates")))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
config.substitutions.append(("%bindir", config.moegen_tools_dir))
config.substitutions.append(("%moegen_obj_root", config.moegen_obj_root))
# The runtime tests' stand-in libcuda (tests/unit/RuntimeFakeCuda.cpp).
config.substitutions.append(
    ("%fakecuda", os.path.join(config.moegen_obj_root, "tests", "unit",
                               "fake-cuda", "libmoegen-fake-cuda.so")))
# `%expect-exit N cmd...` runs cmd and fails unless it exits with exactly N.
config.substitutions.append(
    ("%expect-exit",
     "%s %s" % (config.python_executable,
                os.path.join(config.test_source_root, "expect_exit.py"))))

llvm_config.add_tool_substitutions(["moegen", "moegen-opt", "moegen-sample-capture-replay", "moegen-sample-capture-replay-rt", "moegen-gpu-check", "moegen-ep-check", "moegen-ep-device-check", "moegen-sample-ep-moe-layer", "moegen-sample-ep-replay"], [config.moegen_tools_dir])


# A sanitizer build (-DMOEGEN_SANITIZE=...): feature `sanitizer`, and the
# sanitizers' options for every process a test starts: leaks are findings,
# UBSan stops at the first (CMakeLists.txt, MOEGEN_SANITIZE).
if config.moegen_sanitize:
    config.available_features.add("sanitizer")
    config.environment["ASAN_OPTIONS"] = (
        "detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0")
    config.environment["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    config.environment["MOEGEN_SANITIZED"] = "1"

# `mpi`: moegen was built with MPI (MoEGenEpMpi) and mpirun is on PATH.
# `%mpirun N` starts N ranks on this machine whatever its core count, also
# as root, and kills the job after 120 s rather than let a test hang.
import shutil
if config.moegen_have_mpi and shutil.which("mpirun"):
    config.available_features.add("mpi")
    config.environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    config.environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    # Open MPI's own allocations outlive MPI_Finalize (dlclosed plugins,
    # no frame to suppress by), so LeakSanitizer is off for its ranks; the
    # EP code's leaks are checked by MoEGenRuntimeTests (EpTest.cpp, ranks
    # as threads).
    mpirun = "mpirun --oversubscribe --timeout 120"
    if config.moegen_sanitize:
        mpirun = "env ASAN_OPTIONS=%s %s" % (
            config.environment["ASAN_OPTIONS"].replace(
                "detect_leaks=1", "detect_leaks=0"), mpirun)
    config.substitutions.append(("%mpirun", mpirun + " -n"))

# `cuda-runtime`: moegen was built with the runtime's CUDA library (cuda.h
# found), so `--backend cuda` exists at all.
if config.moegen_have_cuda_runtime:
    config.available_features.add("cuda-runtime")

# `cuda-driver`: a CUDA driver and at least one device; tests that run
# kernels on the GPU REQUIRE it, and their no-GPU counterparts are
# UNSUPPORTED with it.
def _has_cuda_device():
    import ctypes
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except OSError:
        return False


if _has_cuda_device():
    config.available_features.add("cuda-driver")


# `nccl`: NCCL's library loads here (the runtime finds it by the same name).
def _has_nccl():
    import ctypes
    try:
        ctypes.CDLL("libnccl.so.2")
        return True
    except OSError:
        return False


if _has_nccl():
    config.available_features.add("nccl")


# `tmpfs-mount`: a tiny tmpfs can be mounted (as root, outside most
# containers), so that tests can fill a file system to get ENOSPC.
def _can_mount_tmpfs():
    import subprocess
    import tempfile
    directory = tempfile.mkdtemp(prefix="moegen-lit-mount-")
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if mounted:
            subprocess.run(["umount", directory], check=True)
        return mounted
    except OSError:
        return False
    finally:
        os.rmdir(directory)


if _can_mount_tmpfs():
    config.available_features.add("tmpfs-mount")
