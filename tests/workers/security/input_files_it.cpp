// Input files read by `shoal records enqueue --file` through workers::input_reader (the reader
// `shoal send` uses too): a CSV record whose quoted field spans lines is one record, and a quote
// left open is refused with the line it opened on, before anything is enqueued.

#include "tests/workers/security/security_harness.hpp"

#include <fstream>

namespace shoal::tests::security {
namespace {

class InputFiles : public security_test {
protected:
  std::vector<std::pair<std::string, std::string>> env(const std::string& table) const {
    return {{"AZURE_STORAGE_CONNECTION_STRING", cs_}, {"SHOAL_WORK_TABLE", table}};
  }
  fs::path write(const std::string& name, const std::string& text) const {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
};

TEST_F(InputFiles, RecordsEnqueueReadsACsvRecordWhoseQuotedPayloadSpansLines) {
  const std::string table = unique_name("inputcsv");
  const fs::path csv = write("r.csv", "id,payload\r\nr1,\"first line\r\nsecond, \"\"quoted\"\"\"\r\nr2,plain\r\n");
  const fs::path log = dir_ / "enqueue.log";
  auto e = spawn_shoal({"records", "enqueue", "--queue", "exec", "--file", csv.string()}, env(table), log);
  ASSERT_EQ(wait_exit(e, 60s), 0) << slurp(log);
  for (const auto& [id, want] : std::vector<std::pair<std::string, std::string>>{
           {"r1", "first line\r\nsecond, \"quoted\""}, {"r2", "plain"}}) {
    const fs::path show = dir_ / (id + ".json");
    auto s = spawn_shoal({"--json", "records", "show", id, "--queue", "exec"}, env(table), show);
    ASSERT_EQ(wait_exit(s, 60s), 0) << slurp(show);
    const std::string text = slurp(show);
    ASSERT_NE(text.find(nlohmann::json(want).dump()), std::string::npos) << id << ": " << text;
  }
}

TEST_F(InputFiles, RecordsEnqueueRefusesAQuoteLeftOpenNamingItsLineAndEnqueuesNothing) {
  const std::string table = unique_name("inputbad");
  const fs::path csv = write("bad.csv", "id,payload\nok1,fine\nbad,\"never closed\nok2,x\n");
  const fs::path log = dir_ / "enqueue.log";
  auto e = spawn_shoal({"records", "enqueue", "--queue", "exec", "--file", csv.string()}, env(table), log);
  EXPECT_EQ(wait_exit(e, 60s), 1) << slurp(log);
  EXPECT_NE(slurp(log).find("line 3: unclosed quote"), std::string::npos) << slurp(log);
  const fs::path show = dir_ / "ok1.log";
  auto s = spawn_shoal({"records", "show", "ok1", "--queue", "exec"}, env(table), show);
  EXPECT_NE(wait_exit(s, 60s), 0) << slurp(show); // nothing was enqueued, not even the good row
}

} // namespace
} // namespace shoal::tests::security
