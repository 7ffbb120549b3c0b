#include "storage/queue_client.hpp"

#include "storage/encoding.hpp"
#include "storage/xml_codec.hpp"

#include <charconv>
#include <utility>

namespace shoal::storage {
namespace {

using seconds = std::chrono::seconds;

std::string queue_path(std::string_view q) { return "/" + std::string(q); }

std::string message_path(std::string_view q, std::string_view id) {
  return "/" + std::string(q) + "/messages/" + url_encode(id);
}

// The pipeline maps 400 to bad_request; a stale pop receipt is really a lost condition (someone
// received or updated the message since), so callers get precondition_failed and can treat it
// like a lost ETag race.
error receipt_error(error e, std::string_view what) {
  if (e.service_code == "PopReceiptMismatch") {
    e.code = errc::precondition_failed;
    return with_context(std::move(e), std::string(what) +
                                          ": pop receipt is stale (the message was received "
                                          "again or updated since; PopReceiptMismatch)");
  }
  return with_context(std::move(e), what);
}

result<void> check_count(std::uint32_t count) {
  if (count < 1 || count > max_messages_per_get)
    return std::unexpected(error::invalid("numofmessages must be 1-32, not " +
                                          std::to_string(count)));
  return {};
}

result<void> check_visibility(seconds v, seconds min, std::string_view what) {
  if (v < min || v > max_visibility_timeout)
    return std::unexpected(error::invalid(std::string(what) + " visibility timeout must be " +
                                          std::to_string(min.count()) + "-604800 s, not " +
                                          std::to_string(v.count())));
  return {};
}

result<void> check_ids(std::string_view queue, std::string_view id, std::string_view receipt) {
  if (auto v = validate_queue_name(queue); !v)
    return v;
  if (id.empty())
    return std::unexpected(error::invalid("message id must not be empty"));
  if (receipt.empty())
    return std::unexpected(error::invalid("pop receipt must not be empty (peeked messages have none)"));
  return {};
}

result<std::vector<queue_message>> parse_list(const http_response& r, message_encoding enc,
                                              std::string_view what) {
  auto msgs = xml::parse_queue_messages(r.body, enc);
  if (!msgs) {
    error e = std::move(msgs.error());
    e.http_status = r.status;
    e.request_id = std::string(r.header("x-ms-request-id").value_or(""));
    return std::unexpected(with_context(std::move(e), what));
  }
  return msgs;
}

} // namespace

result<void> validate_queue_name(std::string_view name) {
  if (name.size() < 3 || name.size() > 63)
    return std::unexpected(error::invalid("queue name " + single_quoted(name) +
                                          " must be 3-63 characters (has " +
                                          std::to_string(name.size()) + ")"));
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return std::unexpected(error::invalid("queue name " + single_quoted(name) +
                                            " may hold only lowercase letters, digits and '-'"));
  if (name.front() == '-' || name.back() == '-')
    return std::unexpected(error::invalid("queue name " + single_quoted(name) +
                                          " must not start or end with '-'"));
  if (name.find("--") != std::string_view::npos)
    return std::unexpected(error::invalid("queue name " + single_quoted(name) +
                                          " must not contain consecutive dashes"));
  return {};
}

result<std::string> encode_message_text(std::string_view text, message_encoding enc) {
  std::string out;
  if (enc == message_encoding::base64) {
    out = base64_encode(text);
  } else {
    if (!xml::is_xml_text(text))
      return std::unexpected(error::invalid(
          "raw message text must be UTF-8 without control characters other than TAB/LF/CR; "
          "use message_encoding::base64 for arbitrary bytes"));
    out = std::string(text);
  }
  if (out.size() > max_message_bytes)
    return std::unexpected(error::exceeded("message text is " + std::to_string(out.size()) +
                                 " bytes once encoded (" + std::to_string(text.size()) +
                                 " before); the limit is 65536"));
  return out;
}

// -- queues ----------------------------------------------------------------------------------------

result<bool> queue_client::create_queue(std::string_view queue) const {
  if (auto v = validate_queue_name(queue); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::put;
  req.path = queue_path(queue);
  auto r = pipeline_.send(service::queue, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "create queue " + single_quoted(queue)));
  return r->status == 201;
}

result<void> queue_client::delete_queue(std::string_view queue) const {
  if (auto v = validate_queue_name(queue); !v)
    return v;
  storage_request req;
  req.method = http_method::del;
  req.path = queue_path(queue);
  auto r = pipeline_.send(service::queue, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "delete queue " + single_quoted(queue)));
  return {};
}

result<std::uint64_t> queue_client::approximate_message_count(std::string_view queue) const {
  if (auto v = validate_queue_name(queue); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::get;
  req.path = queue_path(queue);
  req.query = {{"comp", "metadata"}};
  auto r = pipeline_.send(service::queue, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "get metadata of queue " + single_quoted(queue)));
  std::string_view v = r->header("x-ms-approximate-messages-count").value_or("");
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc{} || p != v.data() + v.size()) {
    error e;
    e.code = errc::bad_response;
    e.http_status = r->status;
    e.message = "queue " + single_quoted(queue) + ": bad or missing x-ms-approximate-messages-count '" +
                std::string(v) + "'";
    return std::unexpected(std::move(e));
  }
  return n;
}

result<void> queue_client::clear_messages(std::string_view queue) const {
  if (auto v = validate_queue_name(queue); !v)
    return v;
  storage_request req;
  req.method = http_method::del;
  req.path = queue_path(queue) + "/messages";
  auto r = pipeline_.send(service::queue, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "clear queue " + single_quoted(queue)));
  return {};
}

// -- messages --------------------------------------------------------------------------------------

result<put_message_result> queue_client::put_message(std::string_view queue, std::string_view text,
                                                     const put_message_options& opts) const {
  if (auto v = validate_queue_name(queue); !v)
    return std::unexpected(v.error());
  if (auto v = check_visibility(opts.visibility_timeout, seconds{0}, "put"); !v)
    return std::unexpected(v.error());
  // Without a TTL the service applies 7 days; the visibility timeout must stay below the TTL.
  seconds ttl = opts.ttl.value_or(max_visibility_timeout);
  if (ttl != message_ttl_infinite) {
    if (ttl < seconds{1})
      return std::unexpected(error::invalid("message TTL must be >= 1 s or -1 (never), not " +
                                            std::to_string(ttl.count())));
    if (opts.visibility_timeout >= ttl)
      return std::unexpected(error::invalid(
          "visibility timeout (" + std::to_string(opts.visibility_timeout.count()) +
          " s) must be less than the message TTL (" + std::to_string(ttl.count()) + " s)"));
  }
  auto encoded = encode_message_text(text, opts.encoding);
  if (!encoded)
    return std::unexpected(encoded.error());
  storage_request req;
  req.method = http_method::post;
  req.path = queue_path(queue) + "/messages";
  if (opts.visibility_timeout != seconds{0})
    req.query.emplace_back("visibilitytimeout", std::to_string(opts.visibility_timeout.count()));
  if (opts.ttl)
    req.query.emplace_back("messagettl", std::to_string(opts.ttl->count()));
  req.headers.emplace_back("Content-Type", "application/xml");
  req.body = xml::build_queue_message(*encoded);
  auto r = pipeline_.send(service::queue, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "put message on " + single_quoted(queue)));
  auto msgs = parse_list(*r, message_encoding::raw, "put message on " + single_quoted(queue));
  if (!msgs)
    return std::unexpected(msgs.error());
  if (msgs->size() != 1) {
    error e;
    e.code = errc::bad_response;
    e.http_status = r->status;
    e.message = "put message on " + single_quoted(queue) + ": expected 1 message in the response, got " +
                std::to_string(msgs->size());
    return std::unexpected(std::move(e));
  }
  queue_message& m = msgs->front();
  put_message_result out;
  out.message_id = std::move(m.message_id);
  out.pop_receipt = std::move(m.pop_receipt);
  out.insertion_time = m.insertion_time;
  out.expiration_time = m.expiration_time;
  out.time_next_visible = m.time_next_visible;
  return out;
}

result<std::vector<queue_message>>
queue_client::get_messages(std::string_view queue, const get_messages_options& opts) const {
  if (auto v = validate_queue_name(queue); !v)
    return std::unexpected(v.error());
  if (auto v = check_count(opts.count); !v)
    return std::unexpected(v.error());
  if (auto v = check_visibility(opts.visibility_timeout, seconds{1}, "get"); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::get;
  req.path = queue_path(queue) + "/messages";
  req.query = {{"numofmessages", std::to_string(opts.count)},
               {"visibilitytimeout", std::to_string(opts.visibility_timeout.count())}};
  auto r = pipeline_.send(service::queue, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "get messages from " + single_quoted(queue)));
  return parse_list(*r, opts.encoding, "get messages from " + single_quoted(queue));
}

result<std::vector<queue_message>>
queue_client::peek_messages(std::string_view queue, const peek_messages_options& opts) const {
  if (auto v = validate_queue_name(queue); !v)
    return std::unexpected(v.error());
  if (auto v = check_count(opts.count); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::get;
  req.path = queue_path(queue) + "/messages";
  req.query = {{"peekonly", "true"}, {"numofmessages", std::to_string(opts.count)}};
  auto r = pipeline_.send(service::queue, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "peek messages of " + single_quoted(queue)));
  return parse_list(*r, opts.encoding, "peek messages of " + single_quoted(queue));
}

result<void> queue_client::delete_message(std::string_view queue, std::string_view message_id,
                                          std::string_view pop_receipt) const {
  if (auto v = check_ids(queue, message_id, pop_receipt); !v)
    return v;
  storage_request req;
  req.method = http_method::del;
  req.path = message_path(queue, message_id);
  req.query = {{"popreceipt", std::string(pop_receipt)}};
  auto r = pipeline_.send(service::queue, req);
  if (!r && r.error().code == errc::not_found && r.error().attempts > 1 &&
      r.error().service_code == "MessageNotFound")
    return {}; // an earlier attempt deleted it; the response was lost
  if (!r)
    return std::unexpected(receipt_error(std::move(r.error()), "delete message " +
                                                                   single_quoted(message_id) + " of " +
                                                                   single_quoted(queue)));
  return {};
}

result<update_message_result>
queue_client::update_message(std::string_view queue, std::string_view message_id,
                             std::string_view pop_receipt, const update_message_options& opts) const {
  if (auto v = check_ids(queue, message_id, pop_receipt); !v)
    return std::unexpected(v.error());
  if (auto v = check_visibility(opts.visibility_timeout, seconds{0}, "update"); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::put;
  req.path = message_path(queue, message_id);
  req.query = {{"popreceipt", std::string(pop_receipt)},
               {"visibilitytimeout", std::to_string(opts.visibility_timeout.count())}};
  if (opts.text) {
    auto encoded = encode_message_text(*opts.text, opts.encoding);
    if (!encoded)
      return std::unexpected(encoded.error());
    req.headers.emplace_back("Content-Type", "application/xml");
    req.body = xml::build_queue_message(*encoded);
  }
  auto r = pipeline_.send(service::queue, req);
  const std::string what = "update message " + single_quoted(message_id) + " of " + single_quoted(queue);
  if (!r)
    return std::unexpected(receipt_error(std::move(r.error()), what));
  update_message_result out;
  out.pop_receipt = std::string(r->header("x-ms-popreceipt").value_or(""));
  if (out.pop_receipt.empty()) {
    error e;
    e.code = errc::bad_response;
    e.http_status = r->status;
    e.message = what + ": response has no x-ms-popreceipt";
    return std::unexpected(std::move(e));
  }
  if (auto t = r->header("x-ms-time-next-visible"))
    if (auto tp = parse_http_date(*t))
      out.time_next_visible = *tp;
  return out;
}

} // namespace shoal::storage
