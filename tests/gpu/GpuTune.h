//===- GpuTune.h - moegen-gpu-check --tune ----------------------*- C++ -*-===//

#ifndef MOEGEN_TESTS_GPU_GPUTUNE_H
#define MOEGEN_TESTS_GPU_GPUTUNE_H

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace moegen::gpucheck {

/// Times the candidates `moegen autotune --backend cuda --emit-candidates`
/// wrote to `dir` on GPU 0, at each token count, and merges the winners
/// into the tuning database at `dbPath` (GpuTune.cpp). Exit status: 0, or
/// 2 after one line on stderr for a bad directory or database; throws
/// rt::Error for a failing device.
int tuneCandidates(const std::filesystem::path &dir,
                   const std::vector<int64_t> &tokenCounts, int reps,
                   const std::string &dbPath, double minGain = 0.03);

} // namespace moegen::gpucheck

#endif // MOEGEN_TESTS_GPU_GPUTUNE_H
