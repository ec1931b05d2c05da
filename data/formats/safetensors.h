// safetensors (https://huggingface.co/docs/safetensors): 8-byte little-endian header length N,
// N bytes of JSON {"__metadata__": {str: str}, name: {dtype, shape, data_offsets}}, then the
// tensor bytes. Readable and writable by the Python safetensors library. Supported dtypes:
// F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL. Tensors are saved from CPU copies (any device,
// any strides); loaded tensors are CPU, contiguous, in file (data offset) order.
// A malformed file is a UserError naming the file and the problem.
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ablate::data {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;
};
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace ablate::data
