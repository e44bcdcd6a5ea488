// Small ONNX models for the inference tests, built with modelgen's GraphBuilder so
// tests stay fast (16x16 frames instead of 320x320) and can exercise shapes, names
// and footprints that the production generators never produce.
//
// Thread-safe (no shared state). Each function writes `path` and returns its Status.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace lipsync::inference::testing {

// input [B,6,size,size], audio [B,32,16,16] -> output [B,3,size,size] = input[:,0:3]*scale.
// scale 1 is an exact identity.
Status WriteScaledModel(const std::string& path, int size, float scale);

// Identity like above, plus a `weight_floats`-element constant that stays resident
// (read through a Gather indexed by the audio input, added as 0), so the measured
// footprint is dominated by a known size.
Status WriteHeavyIdentityModel(const std::string& path, int size, int64_t weight_floats);

// A well-formed ONNX model whose inputs are named "x"/"audio": not our contract.
Status WriteWrongNamesModel(const std::string& path);

// Like WriteWrongNamesModel, with the visual input named `name` (a hostile, long name).
Status WriteNamedInputModel(const std::string& path, const std::string& name);

// Bytes that are not an ONNX model.
Status WriteCorruptModel(const std::string& path);

}  // namespace lipsync::inference::testing
