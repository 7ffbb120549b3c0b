#pragma once
// Access to the two Azurite instances (http, https) the CTest fixture `azurite` starts
// (tests/support/azurite_launcher.cpp). Integration test executables get the state folders in
// $SHOAL_TEST_AZURITE and $SHOAL_TEST_AZURITE_TLS; run by hand, they fall back to the build
// tree's folders, so `ctest -L integration` or a manual `shoal_test_azurite start` both work.

#include <string>
#include <string_view>

namespace shoal::tests {

/// Connection string of the plain-HTTP Azurite. Fails the current test (ADD_FAILURE) and
/// returns "" when the fixture did not run.
std::string azurite_connection_string();

/// Connection string of the HTTPS Azurite and the path of its self-signed certificate (the
/// CA file to trust). Same failure behaviour.
std::string azurite_tls_connection_string();
std::string azurite_tls_ca_file();

/// The fixture `fault_proxy` (tests/support/fault_proxy.hpp, in front of the plain-HTTP
/// Azurite): its state folder ($SHOAL_TEST_FAULT_PROXY overrides), the connection string that
/// goes through it and its control port. Fail the current test and return ""/0 when the fixture
/// did not run.
std::string fault_proxy_state_dir();
std::string fault_proxy_connection_string();
int fault_proxy_control_port();

/// Path of the built `shoal` executable (for tests that run it as a process); $SHOAL_BINARY
/// overrides.
std::string shoal_binary();

/// The repository's top folder (deploy/, bench/ ...); $SHOAL_SOURCE_DIR overrides.
std::string source_dir();

/// A name unique to this process and call, valid as a table name (letters and digits, starts
/// with a letter, ≤ 63) and, lower-cased, as a container or queue name: prefix + pid + counter.
std::string unique_name(std::string_view prefix);

} // namespace shoal::tests
