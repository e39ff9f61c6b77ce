// SPDX-License-Identifier: Apache-2.0
// Every example in configs/ must parse. Kernels named there do not exist in the source
// tree, so validate_spec (which opens them) is not called.
#include <algorithm>
#include <filesystem>
#include <vector>

#include <gtest/gtest.h>

#include "skiff/spec.h"

namespace skiff {
namespace {

// The source tree's configs/, named by the build (not __FILE__, which a compiler cache may
// have made relative to a build directory the test does not run in).
std::filesystem::path configs_dir() {
  return std::filesystem::path(SKIFF_SOURCE_DIR) / "configs";
}

std::vector<std::filesystem::path> example_specs() {
  std::vector<std::filesystem::path> files;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(configs_dir(), error)) {
    const auto& path = entry.path();
    // The JSON Schema lives next to the examples but is not a spec.
    if (path.extension() == ".json" && !path.filename().string().ends_with(".schema.json")) {
      files.push_back(path);
    }
  }
  std::ranges::sort(files);
  return files;
}

TEST(SpecExamples, EveryExampleParses) {
  auto files = example_specs();
  ASSERT_FALSE(files.empty()) << "no examples found in " << configs_dir();
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    auto spec = load_spec_file(file);
    ASSERT_TRUE(spec) << spec.error().message();
    // Relative kernel paths resolve next to the example.
    EXPECT_TRUE(spec->boot.kernel.is_absolute());
    // And the example survives a trip through spec_to_json.
    auto again = parse_spec(spec_to_json(*spec), "/");
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(again->boot.kernel, spec->boot.kernel);
    EXPECT_EQ(again->machine.vcpus, spec->machine.vcpus);
  }
}

TEST(SpecExamples, TheDocumentedExamplesExist) {
  for (const char* name : {"minimal.json", "hugepages-2m.json", "smp4-pinned.json"}) {
    EXPECT_TRUE(std::filesystem::exists(configs_dir() / name)) << name;
  }
}

TEST(SpecExamples, SmpExampleIsPinned) {
  auto spec = load_spec_file(configs_dir() / "smp4-pinned.json");
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->machine.vcpus, 4u);
  EXPECT_EQ(spec->machine.vcpu_affinity.size(), 4u);
}

TEST(SpecExamples, HugepagesExampleUses2M) {
  auto spec = load_spec_file(configs_dir() / "hugepages-2m.json");
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->machine.hugepages, HugePages::k2M);
}

}  // namespace
}  // namespace skiff
