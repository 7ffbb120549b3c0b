#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <string>

namespace shoal::tests {
namespace {

std::string state_dir(const char* env, const char* fallback) {
  if (const char* v = std::getenv(env); v && *v)
    return v;
  return fallback;
}

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string connection_string_in(const std::string& dir) {
  std::string cs = read_first_line(dir + "/connection_string");
  if (cs.empty())
    ADD_FAILURE() << "no Azurite connection string in " << dir
                  << "/connection_string: run the tests through ctest (fixture 'azurite'), or "
                     "start one with shoal_test_azurite start --state "
                  << dir;
  return cs;
}

} // namespace

std::string azurite_connection_string() {
  return connection_string_in(state_dir("SHOAL_TEST_AZURITE", SHOAL_TEST_AZURITE_STATE));
}

std::string azurite_tls_connection_string() {
  return connection_string_in(state_dir("SHOAL_TEST_AZURITE_TLS", SHOAL_TEST_AZURITE_TLS_STATE));
}

std::string azurite_tls_ca_file() {
  return state_dir("SHOAL_TEST_AZURITE_TLS", SHOAL_TEST_AZURITE_TLS_STATE) + "/cert.pem";
}

std::string fault_proxy_state_dir() {
  return state_dir("SHOAL_TEST_FAULT_PROXY", SHOAL_TEST_FAULT_PROXY_STATE);
}

std::string fault_proxy_connection_string() {
  const std::string dir = fault_proxy_state_dir();
  std::string cs = read_first_line(dir + "/connection_string");
  if (cs.empty())
    ADD_FAILURE() << "no fault proxy connection string in " << dir
                  << "/connection_string: run the tests through ctest (fixture 'fault_proxy')";
  return cs;
}

int fault_proxy_control_port() {
  const std::string dir = fault_proxy_state_dir();
  const std::string port = read_first_line(dir + "/control_port");
  if (port.empty()) {
    ADD_FAILURE() << "no fault proxy control port in " << dir << "/control_port";
    return 0;
  }
  return std::stoi(port);
}

std::string shoal_binary() { return state_dir("SHOAL_BINARY", SHOAL_TEST_SHOAL_BINARY); }

std::string source_dir() { return state_dir("SHOAL_SOURCE_DIR", SHOAL_TEST_SOURCE_DIR); }

std::string unique_name(std::string_view prefix) {
  static std::atomic<unsigned> counter{0};
  std::string out;
  for (char c : prefix)
    if (std::isalnum(static_cast<unsigned char>(c)))
      out += c;
  if (out.empty() || !std::isalpha(static_cast<unsigned char>(out[0])))
    out.insert(out.begin(), 't');
  out += 'p' + std::to_string(::getpid()) + 'n' + std::to_string(counter++);
  if (out.size() > 63)
    out.erase(0, out.size() - 63), out[0] = 't';
  return out;
}

} // namespace shoal::tests
