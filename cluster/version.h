#pragma once
namespace kiln {
const char* version_string();
}  // namespace kiln
