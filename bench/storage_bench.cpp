// storage_bench: the Table client against a minimal raw libcurl loop, in one run, on one Azurite.
//
//   bench/run.sh storage [--rounds N] [--chunk N] [--batches-per-chunk N] [--phases insert,batch,merge,catalog]
//                        [--catalog-blobs N] [--catalog-batch N]
//
// Three operations, each measured for the client (shoal::storage::table_client over the
// retrying, signing pipeline) and for "raw": one reused CURL easy handle, a hand-built
// SharedKey-signed request and a printf-built body, no validation, no parsing beyond the status
// and the ETag header. Both sides send the same entities (same properties, same JSON size).
//   - single insert: POST one entity (Prefer: return-no-content)
//   - batched insert: $batch of 100 inserts in one changeset (entities/s)
//   - conditional merge: MERGE with If-Match = the ETag the previous write returned
// Client and raw alternate in chunks (order flipped every round) so Azurite's 5 s autosave and
// its growing collections hit both sides alike; each phase and side uses a fresh table.
// Prints entities (or ops) per second and the ratio client ÷ raw (target ≥ 0.9).
//
// Phase `catalog` (its own figure, no raw side): blob registrations per second of
// blob_catalog::register_blob called once per blob against register_blobs called with batches
// of --catalog-batch (default 50), --catalog-blobs (default 500) blobs each, on two fresh
// catalogs, alternating batch-sized chunks of both (order flipped each chunk). Every blob has
// the same dest, date and host, as the persistor's registrar sees them.

#include "storage/catalog.hpp"
#include "storage/catalog_blobs.hpp"
#include "storage/connection_string.hpp"
#include "storage/table_client.hpp"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

namespace {

using namespace shoal::storage;
using bench_clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "storage_bench: %s\n", msg.c_str());
  std::exit(1);
}

// -- the raw baseline -----------------------------------------------------------------------------

std::string raw_base64(const unsigned char* p, std::size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n));
  out.resize(static_cast<std::size_t>(len));
  return out;
}

// One easy handle reused for every request (keep-alive), like a hand-written client would.
class raw_table {
public:
  raw_table(const storage_account& acct) : account_(acct.name), key_(acct.key), endpoint_(acct.table_endpoint) {
    auto scheme = endpoint_.find("://");
    auto slash = endpoint_.find('/', scheme == std::string::npos ? 0 : scheme + 3);
    endpoint_path_ = slash == std::string::npos ? "" : endpoint_.substr(slash);
    h_ = curl_easy_init();
    curl_easy_setopt(h_, CURLOPT_WRITEFUNCTION, &raw_table::on_body);
    curl_easy_setopt(h_, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(h_, CURLOPT_HEADERFUNCTION, &raw_table::on_header);
    curl_easy_setopt(h_, CURLOPT_HEADERDATA, this);
    curl_easy_setopt(h_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h_, CURLOPT_TCP_NODELAY, 1L);
  }
  ~raw_table() { curl_easy_cleanup(h_); }
  raw_table(const raw_table&) = delete;
  raw_table& operator=(const raw_table&) = delete;

  // Sends one signed request; returns the HTTP status (0 on a transport error).
  long send(const char* method, const std::string& path, const std::string& body, const std::string& content_type,
            const std::string& if_match = {}) {
    char date[64];
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    std::string to_sign = std::string(method) + "\n\n" + content_type + "\n" + date + "\n/" + account_ +
                          endpoint_path_ + path;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
         reinterpret_cast<const unsigned char*>(to_sign.data()), to_sign.size(), mac, &mac_len);
    curl_slist* headers = nullptr;
    auto add = [&](const std::string& h) { headers = curl_slist_append(headers, h.c_str()); };
    add(std::string("x-ms-date: ") + date);
    add("x-ms-version: 2019-02-02");
    add("Authorization: SharedKey " + account_ + ":" + raw_base64(mac, mac_len));
    add("Accept: application/json;odata=minimalmetadata");
    add("DataServiceVersion: 3.0;NetFx");
    add("MaxDataServiceVersion: 3.0;NetFx");
    add("Content-Type: " + content_type);
    add("Prefer: return-no-content");
    add("Expect:");
    if (!if_match.empty())
      add("If-Match: " + if_match);
    std::string url = endpoint_ + path;
    curl_easy_setopt(h_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h_, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h_, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h_, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(h_, CURLOPT_HTTPHEADER, headers);
    body_.clear();
    etag_.clear();
    long status = 0;
    if (curl_easy_perform(h_) == CURLE_OK)
      curl_easy_getinfo(h_, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    return status;
  }
  const std::string& etag() const { return etag_; }
  const std::string& body() const { return body_; }
  const std::string& endpoint() const { return endpoint_; }

private:
  static std::size_t on_body(char* p, std::size_t, std::size_t n, void* self) {
    static_cast<raw_table*>(self)->body_.append(p, n);
    return n;
  }
  static std::size_t on_header(char* p, std::size_t, std::size_t n, void* self) {
    std::string_view line(p, n);
    if (line.size() > 5 && (line[0] == 'E' || line[0] == 'e') && (line.substr(1, 4) == "Tag:" || line.substr(1, 4) == "tag:")) {
      line.remove_prefix(5);
      while (!line.empty() && line.front() == ' ')
        line.remove_prefix(1);
      while (!line.empty() && (line.back() == '\r' || line.back() == '\n'))
        line.remove_suffix(1);
      static_cast<raw_table*>(self)->etag_ = std::string(line);
    }
    return n;
  }
  std::string account_, key_, endpoint_, endpoint_path_;
  CURL* h_ = nullptr;
  std::string body_, etag_;
};

// -- the workload (same entity on both sides) -----------------------------------------------------

const std::string payload(100, 'x');

std::string row_key(int n) {
  char rk[16];
  std::snprintf(rk, sizeof rk, "r%07d", n);
  return rk;
}

table_entity client_entity(const std::string& pk, int n) {
  table_entity e;
  e.partition_key = pk;
  e.row_key = row_key(n);
  e.set("status", std::string("pending")).set("attempts", n % 5).set("payload", payload);
  return e;
}

std::string raw_entity_json(const std::string& pk, int n) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                R"({"PartitionKey":"%s","RowKey":"r%07d","attempts":%d,"payload":"%s","status":"pending"})",
                pk.c_str(), n, n % 5, payload.c_str());
  return buf;
}

std::string raw_batch_body(const std::string& endpoint, const std::string& table, const std::string& pk, int first,
                           int count) {
  std::string b;
  b.reserve(static_cast<std::size_t>(count) * 420 + 200);
  b += "--batch_raw\r\nContent-Type: multipart/mixed; boundary=changeset_raw\r\n\r\n";
  for (int i = 0; i < count; ++i) {
    b += "--changeset_raw\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nPOST ";
    b += endpoint;
    b += '/';
    b += table;
    b += " HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json;odata=minimalmetadata\r\n"
         "Prefer: return-no-content\r\nDataServiceVersion: 3.0;\r\n\r\n";
    b += raw_entity_json(pk, first + i);
    b += "\r\n";
  }
  b += "--changeset_raw--\r\n--batch_raw--\r\n";
  return b;
}

// -- measurement ----------------------------------------------------------------------------------

struct side_total {
  double seconds = 0;     // wall clock
  double cpu_seconds = 0; // this thread's CPU time: the client's own cost, free of Azurite's noise
  long units = 0;         // entities or operations
  long requests = 0;
  double rate() const { return seconds > 0 ? static_cast<double>(units) / seconds : 0; }
  double cpu_us_per_request() const { return requests > 0 ? cpu_seconds * 1e6 / static_cast<double>(requests) : 0; }
};

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Runs f (which returns how many units it did) and adds its wall and CPU time to `side`.
template <class F> void timed(side_total& side, long requests, F&& f) {
  auto t0 = bench_clock::now();
  double c0 = thread_cpu_seconds();
  side.units += f();
  side.cpu_seconds += thread_cpu_seconds() - c0;
  side.seconds += std::chrono::duration<double>(bench_clock::now() - t0).count();
  side.requests += requests;
}

struct phase_result {
  const char* name;
  side_total client, raw;
};

void expect(bool ok, const std::string& what) {
  if (!ok)
    die(what);
}

table_client fresh_table(const table_service_client& svc, const std::string& prefix) {
  static int counter = 0;
  std::string name = prefix + std::to_string(::getpid()) + "n" + std::to_string(counter++);
  auto t = svc.table(name);
  expect(t.has_value(), "bad table name " + name);
  auto c = t->create_table();
  expect(c.has_value(), "create table: " + (c ? std::string() : c.error().describe()));
  return *t;
}

} // namespace

int main(int argc, char** argv) {
  int rounds = 60, chunk = 50, batches_per_chunk = 3, merge_entities = 50;
  int catalog_blobs = 500, catalog_batch = 50;
  std::string phases = "insert,batch,merge,catalog";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (a == "--rounds")
      rounds = v;
    else if (a == "--chunk")
      chunk = v;
    else if (a == "--batches-per-chunk")
      batches_per_chunk = v;
    else if (a == "--catalog-blobs")
      catalog_blobs = v;
    else if (a == "--catalog-batch")
      catalog_batch = v;
    else if (a == "--phases")
      phases = argv[i + 1];
    else
      die("unknown option " + a);
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  auto account = account_from_environment();
  expect(account.has_value(), account ? "" : account.error().describe());
  auto svc = table_service_client::from_connection_string(std::getenv("AZURE_STORAGE_CONNECTION_STRING"));
  expect(svc.has_value(), svc ? "" : svc.error().describe());
  raw_table raw(*account);
  std::vector<phase_result> results;

  // Runs `rounds` rounds of one client chunk and one raw chunk, alternating which goes first.
  auto alternate = [&](phase_result& res, long requests_per_chunk, auto&& client_chunk, auto&& raw_chunk) {
    for (int r = 0; r < rounds; ++r) {
      if (r % 2 == 0) {
        timed(res.client, requests_per_chunk, [&] { return client_chunk(r); });
        timed(res.raw, requests_per_chunk, [&] { return raw_chunk(r); });
      } else {
        timed(res.raw, requests_per_chunk, [&] { return raw_chunk(r); });
        timed(res.client, requests_per_chunk, [&] { return client_chunk(r); });
      }
    }
  };
  auto drop = [&](const table_client& a, const table_client& b) {
    (void)a.delete_table(); // keeps Azurite's database (and its autosave) small for the next phase
    (void)b.delete_table();
  };
  auto wanted = [&](std::string_view phase) { return phases.find(phase) != std::string::npos; };

  // -- single inserts ------------------------------------------------------------------------
  if (wanted("insert")) {
    table_client ct = fresh_table(*svc, "benchins");
    table_client rt = fresh_table(*svc, "benchinsraw");
    const std::string raw_path = "/" + rt.name();
    for (int i = 0; i < 20; ++i) { // warm-up: connections, Azurite JIT
      expect(ct.insert(client_entity("warm", i)).has_value(), "warm-up insert");
      expect(raw.send("POST", raw_path, raw_entity_json("warm", i), "application/json") == 204, "raw warm-up");
    }
    phase_result res{"single insert (entities/s)", {}, {}};
    alternate(
        res, chunk,
        [&](int r) {
          for (int i = 0; i < chunk; ++i) {
            auto w = ct.insert(client_entity("p", r * chunk + i));
            expect(w.has_value(), w ? "" : "client insert: " + w.error().describe());
          }
          return chunk;
        },
        [&](int r) {
          for (int i = 0; i < chunk; ++i) {
            long st = raw.send("POST", raw_path, raw_entity_json("p", r * chunk + i), "application/json");
            expect(st == 204, "raw insert status " + std::to_string(st) + ": " + raw.body());
          }
          return chunk;
        });
    results.push_back(res);
    drop(ct, rt);
  }

  // -- batched inserts -----------------------------------------------------------------------
  if (wanted("batch")) {
    table_client ct = fresh_table(*svc, "benchbatch");
    table_client rt = fresh_table(*svc, "benchbatchraw");
    const std::string ct_type = "multipart/mixed; boundary=batch_raw";
    phase_result res{"batched insert (entities/s, 100/tx)", {}, {}};
    int next_client = 0, next_raw = 0;
    auto client_batch = [&] {
      table_transaction tx;
      for (int i = 0; i < 100; ++i)
        tx.insert(client_entity("p", next_client++));
      auto r = ct.submit_transaction(tx);
      expect(r.has_value(), r ? "" : "client batch: " + r.error().describe());
    };
    auto raw_batch = [&] {
      long st = raw.send("POST", "/$batch", raw_batch_body(raw.endpoint(), rt.name(), "p", next_raw, 100), ct_type);
      next_raw += 100;
      expect(st == 202 && raw.body().find("HTTP/1.1 4") == std::string::npos, "raw batch: " + raw.body());
    };
    client_batch(); // warm-up
    raw_batch();
    alternate(
        res, batches_per_chunk,
        [&](int) {
          for (int b = 0; b < batches_per_chunk; ++b)
            client_batch();
          return batches_per_chunk * 100;
        },
        [&](int) {
          for (int b = 0; b < batches_per_chunk; ++b)
            raw_batch();
          return batches_per_chunk * 100;
        });
    results.push_back(res);
    drop(ct, rt);
  }

  // -- conditional merges --------------------------------------------------------------------
  if (wanted("merge")) {
    table_client ct = fresh_table(*svc, "benchmerge");
    table_client rt = fresh_table(*svc, "benchmergeraw");
    std::vector<std::string> client_etags, raw_etags;
    for (int i = 0; i < merge_entities; ++i) {
      auto w = ct.insert(client_entity("p", i));
      expect(w.has_value(), "seed");
      client_etags.push_back(w->etag);
      expect(raw.send("POST", "/" + rt.name(), raw_entity_json("p", i), "application/json") == 204, "raw seed");
      raw_etags.push_back(raw.etag());
    }
    phase_result res{"conditional merge (ops/s)", {}, {}};
    long client_n = 0, raw_n = 0;
    alternate(
        res, chunk,
        [&](int) {
          for (int i = 0; i < chunk; ++i, ++client_n) {
            int k = static_cast<int>(client_n % merge_entities);
            table_entity patch;
            patch.partition_key = "p";
            patch.row_key = row_key(k);
            patch.set("status", std::string("claimed")).set("gen", std::int64_t{client_n});
            auto w = ct.merge(patch, client_etags[k]);
            expect(w.has_value(), w ? "" : "client merge: " + w.error().describe());
            client_etags[k] = std::move(w->etag);
          }
          return chunk;
        },
        [&](int) {
          for (int i = 0; i < chunk; ++i, ++raw_n) {
            int k = static_cast<int>(raw_n % merge_entities);
            char body[200];
            std::snprintf(body, sizeof body,
                          R"({"PartitionKey":"p","RowKey":"%s","gen":"%ld","gen@odata.type":"Edm.Int64","status":"claimed"})",
                          row_key(k).c_str(), raw_n);
            long st = raw.send("MERGE", "/" + rt.name() + "(PartitionKey='p',RowKey='" + row_key(k) + "')", body,
                               "application/json", raw_etags[k]);
            expect(st == 204, "raw merge status " + std::to_string(st) + ": " + raw.body());
            raw_etags[k] = raw.etag();
          }
          return chunk;
        });
    results.push_back(res);
    drop(ct, rt);
  }

  // -- catalog registrations: register_blob per blob vs register_blobs per batch ---------------
  side_total reg_loop, reg_batch;
  if (wanted("catalog")) {
    expect(catalog_batch >= 1 && catalog_blobs >= catalog_batch, "--catalog-batch must be 1..--catalog-blobs");
    const std::string loop_name = "benchcatloop" + std::to_string(::getpid());
    const std::string batch_name = "benchcatbatch" + std::to_string(::getpid());
    auto loop_cat = blob_catalog::open(*svc, loop_name);
    expect(loop_cat.has_value(), loop_cat ? "" : "catalog: " + loop_cat.error().describe());
    auto batch_cat = blob_catalog::open(*svc, batch_name);
    expect(batch_cat.has_value(), batch_cat ? "" : "catalog: " + batch_cat.error().describe());
    auto entries = [&](int r) {
      std::vector<blob_catalog_entry> out;
      for (int i = 0; i < catalog_batch; ++i) {
        char blob[96];
        std::snprintf(blob, sizeof blob, "flights/2001/01/05/00/h1-p1-%08d.json", r * catalog_batch + i);
        out.push_back({blob, "flights", "2001-01-05", "h1", "persistor-v1", 1000, "shoal", 0});
      }
      return out;
    };
    auto one_by_one = [&](int r) {
      for (const auto& e : entries(r)) {
        auto w = loop_cat->register_blob(e);
        expect(w.has_value(), w ? "" : "register_blob: " + w.error().describe());
      }
      return catalog_batch;
    };
    auto batched = [&](int r) {
      auto es = entries(r);
      auto w = batch_cat->register_blobs(es);
      expect(w.has_value(), w ? "" : "register_blobs: " + w.error().describe());
      return catalog_batch;
    };
    for (int r = 0; r < catalog_blobs / catalog_batch; ++r) {
      if (r % 2 == 0) {
        timed(reg_loop, catalog_batch, [&] { return one_by_one(r); });
        timed(reg_batch, 1, [&] { return batched(r); });
      } else {
        timed(reg_batch, 1, [&] { return batched(r); });
        timed(reg_loop, catalog_batch, [&] { return one_by_one(r); });
      }
    }
    (void)catalog::drop(*svc, loop_name);
    (void)catalog::drop(*svc, batch_name);
  }

  std::printf("\n%-38s %10s %10s %10s %16s\n", "operation", "client", "raw curl", "client/raw",
              "CPU us/req c|raw");
  for (const auto& r : results)
    std::printf("%-38s %10.0f %10.0f %10.3f %8.1f|%-7.1f\n", r.name, r.client.rate(), r.raw.rate(),
                r.raw.rate() > 0 ? r.client.rate() / r.raw.rate() : 0.0, r.client.cpu_us_per_request(),
                r.raw.cpu_us_per_request());
  std::printf("\n(%d rounds, alternating client/raw chunks; %d single ops or %d batches per chunk)\n", rounds, chunk,
              batches_per_chunk);
  if (reg_loop.units > 0)
    std::printf("\ncatalog registrations (blobs/s): register_blob loop %.1f, register_blobs(%d) %.1f, "
                "batched / loop %.1fx (%ld blobs each; CPU ms/blob %.2f | %.2f)\n",
                reg_loop.rate(), catalog_batch, reg_batch.rate(), reg_loop.rate() > 0 ? reg_batch.rate() / reg_loop.rate() : 0.0,
                reg_loop.units, reg_loop.cpu_seconds * 1e3 / static_cast<double>(reg_loop.units),
                reg_batch.cpu_seconds * 1e3 / static_cast<double>(reg_batch.units));
  if (auto t = svc->list_tables({.prefix = "bench", .page_size = 1000}))
    for (const auto& n : *t)
      (void)svc->delete_table(n);
  curl_global_cleanup();
  return 0;
}
