//===- Recorder.cpp - Router capture buffers for replay -------------------===//

#include "runtime/Recorder.h"
#include "runtime/Error.h"

#include <cstring>
#include <limits>

namespace moegen::rt {

namespace {

[[noreturn]] void invalid(const std::string &message) {
  throw Error(Error::Kind::InvalidArgument, message);
}

npy::DType captureDType(int64_t numExperts) {
  return numExperts <= 32767 ? npy::DType::I16 : npy::DType::I32;
}

std::string dtypeName(npy::DType dtype) {
  return dtype == npy::DType::I16 ? "int16" : "int32";
}

} // namespace

Recorder::Recorder(int64_t numTokens, int64_t numLayers, int64_t topK,
                   int64_t numExperts) {
  if (numTokens < 0 || numLayers < 1 || topK < 1 || numExperts < 1 ||
      topK > numExperts || numExperts > std::numeric_limits<int32_t>::max())
    invalid(
        "capture buffer: invalid sizes: tokens = " + std::to_string(numTokens) +
        ", layers = " + std::to_string(numLayers) + ", k = " +
        std::to_string(topK) + ", experts = " + std::to_string(numExperts) +
        " (need tokens >= 0, layers >= 1, 1 <= k <= experts)");
  array.dtype = captureDType(numExperts);
  array.shape = {numTokens, numLayers, topK};
  // Overflow: numTokens * numLayers * topK elements of at most 4 bytes.
  const int64_t limit = std::numeric_limits<int64_t>::max() / 4;
  if (numTokens > limit / numLayers / topK)
    invalid("capture buffer: " + std::to_string(numTokens) + " x " +
            std::to_string(numLayers) + " x " + std::to_string(topK) +
            " ids are too many");
  array.data.assign(size_t(numTokens * numLayers * topK) *
                        npy::itemSize(array.dtype),
                    std::byte{0});
  experts = numExperts;
}

Recorder Recorder::load(const std::string &path, int64_t numExperts,
                        bool unusedSlots) {
  std::string error;
  std::optional<npy::Array> loaded = npy::readNpy(path, error);
  if (!loaded)
    throw Error(Error::Kind::Io, error);
  if (numExperts < 1 || numExperts > std::numeric_limits<int32_t>::max())
    invalid(path + ": invalid num_experts " + std::to_string(numExperts));
  const npy::DType want = captureDType(numExperts);
  if (loaded->dtype != want)
    invalid(path + ": capture dtype '" +
            std::string(npy::descr(loaded->dtype)) + "' must be " +
            dtypeName(want) + " ('" + std::string(npy::descr(want)) +
            "') for " + std::to_string(numExperts) +
            " experts (int16 when num_experts <= 32767, else int32)");
  if (loaded->shape.size() != 3)
    invalid(path +
            ": capture must have 3 dimensions [tokens, layers, k], "
            "got " +
            std::to_string(loaded->shape.size()));
  if (loaded->shape[1] < 1 || loaded->shape[2] < 1 ||
      loaded->shape[2] > numExperts)
    invalid(path + ": capture shape [" + std::to_string(loaded->shape[0]) +
            ", " + std::to_string(loaded->shape[1]) + ", " +
            std::to_string(loaded->shape[2]) +
            "]: need at least one layer and 1 <= k <= " +
            std::to_string(numExperts));
  Recorder recorder;
  recorder.array = std::move(*loaded);
  recorder.experts = numExperts;
  recorder.unused = unusedSlots;
  recorder.source = path;
  recorder.validate();
  return recorder;
}

void Recorder::save(const std::string &path) const {
  std::string error;
  if (!npy::writeNpy(path, array, error))
    throw Error(Error::Kind::Io, error);
}

int32_t Recorder::at(int64_t token, int64_t layer, int64_t j) const {
  const size_t index = size_t((token * numLayers() + layer) * topK() + j);
  if (array.dtype == npy::DType::I16) {
    int16_t value;
    std::memcpy(&value, array.data.data() + index * 2, 2);
    return value;
  }
  int32_t value;
  std::memcpy(&value, array.data.data() + index * 4, 4);
  return value;
}

void Recorder::set(int64_t token, int64_t layer, int64_t j, int32_t id) {
  if (token < 0 || token >= numTokens() || layer < 0 || layer >= numLayers() ||
      j < 0 || j >= topK())
    invalid(source + ": index [" + std::to_string(token) + ", " +
            std::to_string(layer) + ", " + std::to_string(j) +
            "] outside the capture's shape");
  if ((id < 0 || id >= experts) && !(unused && id == -1))
    invalid(source + ": layer " + std::to_string(layer) + ", token " +
            std::to_string(token) + ": expert id " + std::to_string(id) +
            " outside [0, " + std::to_string(experts) + ")");
  const size_t index = size_t((token * numLayers() + layer) * topK() + j);
  if (array.dtype == npy::DType::I16) {
    auto value = static_cast<int16_t>(id);
    std::memcpy(array.data.data() + index * 2, &value, 2);
  } else {
    std::memcpy(array.data.data() + index * 4, &id, 4);
  }
}

LayerView Recorder::layer(int64_t layer) const {
  if (layer < 0 || layer >= numLayers())
    invalid(source + ": layer " + std::to_string(layer) +
            " outside the capture's layers [0, " + std::to_string(numLayers()) +
            ")");
  return LayerView(*this, layer);
}

void Recorder::validateLayer(int64_t layer) const {
  const int64_t k = topK();
  std::vector<int32_t> row(size_t(k), 0);
  for (int64_t t = 0; t < numTokens(); ++t) {
    for (int64_t j = 0; j < k; ++j) {
      int32_t id = at(t, layer, j);
      const std::string where = source + ": layer " + std::to_string(layer) +
                                ", token " + std::to_string(t) + ": ";
      row[size_t(j)] = id;
      if (unused && id == -1)
        continue; // an unused slot of a top-p router
      if (id < 0 || id >= experts)
        invalid(where + "expert id " + std::to_string(id) + " at position " +
                std::to_string(j) + " outside [0, " + std::to_string(experts) +
                ")");
      for (int64_t i = 0; i < j; ++i)
        if (row[size_t(i)] == id)
          invalid(where + "expert id " + std::to_string(id) + " at position " +
                  std::to_string(j) + " repeats position " + std::to_string(i));
    }
  }
}

void Recorder::validate() const {
  for (int64_t l = 0; l < numLayers(); ++l)
    validateLayer(l);
}

int64_t LayerView::numTokens() const { return recorder->numTokens(); }
int64_t LayerView::topK() const { return recorder->topK(); }

int32_t LayerView::at(int64_t token, int64_t j) const {
  return recorder->at(token, layerIndex, j);
}

void LayerView::copyForcedIds(int32_t *out) const {
  recorder->validateLayer(layerIndex);
  const int64_t k = topK();
  for (int64_t t = 0; t < numTokens(); ++t)
    for (int64_t j = 0; j < k; ++j)
      out[t * k + j] = at(t, j);
}

std::vector<int32_t> LayerView::forcedIds() const {
  std::vector<int32_t> ids(size_t(numTokens() * topK()));
  copyForcedIds(ids.data());
  return ids;
}

} // namespace moegen::rt
