// The Authorization check of the routes: "Bearer" in any case, then one or more spaces or tabs,
// then exactly a configured key.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/api/routes.h"

namespace kiln::serve {
namespace {

TEST(RoutesAuth, BearerSchemeIsCaseInsensitiveAndTakesAnyBlankRun) {
  const std::vector<std::string> keys = {"k1", "second-key"};
  for (const char* header :
       {"Bearer k1", "bearer k1", "BEARER k1", "bEaReR second-key", "Bearer   k1", "Bearer\tk1",
        "Bearer \t k1", "Bearer k1 ", "Bearer k1\t"}) {
    EXPECT_TRUE(authorized(header, keys)) << header;
  }
  for (const char* header :
       {"", "Bearer", "Bearer ", "Bearer  ", "Bearerk1", "Basic k1", "Bearer k", "Bearer k12",
        "Bearer K1", " Bearer k1", "Bearer k1 k1", "Bearer: k1", "Bearer k1,", "Bearers k1",
        "Bear k1"}) {
    EXPECT_FALSE(authorized(header, keys)) << "'" << header << "'";
  }
}

}  // namespace
}  // namespace kiln::serve
