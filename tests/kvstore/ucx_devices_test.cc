// UcxNetDevicesFor: a daemon bound to one address keeps UCX on that address's interface; a wildcard, a
// name, an address no interface holds, or UCX_NET_DEVICES in the environment leave UCX's own choice.
#include "kvstore/ucx_devices.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace strata::kvstore {
namespace {

TEST(UcxNetDevices, ASpecificAddressIsItsInterfaceOnly) {
  ASSERT_EQ(std::getenv("UCX_NET_DEVICES"), nullptr) << "run without UCX_NET_DEVICES";
  const std::optional<std::string> loopback = UcxNetDevicesFor("127.0.0.1");
  ASSERT_TRUE(loopback.has_value());
  EXPECT_EQ(loopback->substr(0, loopback->find(',')), "lo");
  EXPECT_EQ(UcxNetDevicesFor("[::1]").value_or("").substr(0, 2), "lo");
}

TEST(UcxNetDevices, WildcardsNamesAndForeignAddressesLeaveUcxsChoice) {
  EXPECT_EQ(UcxNetDevicesFor("0.0.0.0"), std::nullopt);
  EXPECT_EQ(UcxNetDevicesFor("::"), std::nullopt);
  EXPECT_EQ(UcxNetDevicesFor("kvstore-0.strata.svc"), std::nullopt);
  EXPECT_EQ(UcxNetDevicesFor("203.0.113.77"), std::nullopt);  // TEST-NET-3: no interface holds it
}

TEST(UcxNetDevices, TheEnvironmentWins) {
  ASSERT_EQ(setenv("UCX_NET_DEVICES", "eth0", 1), 0);
  EXPECT_EQ(UcxNetDevicesFor("127.0.0.1"), std::nullopt);
  unsetenv("UCX_NET_DEVICES");
}

}  // namespace
}  // namespace strata::kvstore
