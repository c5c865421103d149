// The kiln command line. Sub-commands are registered from cmd_*.cpp files.
#include <cstdio>

#include "cluster/version.h"

int main() {
  std::printf("kiln %s\n", kiln::version_string());
  return 0;
}
