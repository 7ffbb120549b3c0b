#pragma once
// Azure Queue service client: queues and messages over the shared signing/retry pipeline.
// Reference: shared/reference/azure-storage-rest.md §7 and the REST pages named per call.

#include "storage/error.hpp"
#include "storage/pipeline.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::storage {

// -- limits (REST "Put Message", "Get Messages", "Update Message") --------------------------------

/// Largest message text in bytes as sent, i.e. after base64 encoding (XML escaping not counted).
inline constexpr std::size_t max_message_bytes = 64 * 1024;
/// Most messages one Get Messages / Peek Messages call may return.
inline constexpr std::uint32_t max_messages_per_get = 32;
/// Longest visibility timeout: 7 days.
inline constexpr std::chrono::seconds max_visibility_timeout{7 * 24 * 3600};
/// The time-to-live meaning "never expires" (x-ms-version ≥ 2017-07-29).
inline constexpr std::chrono::seconds message_ttl_infinite{-1};

/// How message text is carried. `base64` (the default, what legacy SDKs and Functions expect)
/// encodes arbitrary bytes on put and decodes on get; `raw` sends the text as is (it must then
/// be UTF-8 without XML-forbidden control characters).
enum class message_encoding : std::uint8_t { base64, raw };

/// Checks a queue name: 3–63 characters of lowercase letters, digits and '-', starting with a
/// letter or digit, no trailing '-' and no "--" (REST "Naming Queues and Metadata").
/// Errors: invalid_argument naming the broken rule. Pure, thread-safe.
[[nodiscard]] result<void> validate_queue_name(std::string_view name);

/// The text as it would be sent: base64 of `text`, or `text` itself (checked to be UTF-8
/// without XML-forbidden characters) for `raw`. Errors: invalid_argument (bad raw text),
/// limit_exceeded (over 64 KiB once encoded, naming both sizes). Pure, thread-safe.
[[nodiscard]] result<std::string> encode_message_text(std::string_view text, message_encoding enc);

// -- values ---------------------------------------------------------------------------------------

/// One message returned by get_messages() or peek_messages().
struct queue_message {
  std::string message_id;   ///< service-assigned id (a GUID)
  std::string pop_receipt;  ///< needed to delete/update; empty for peeked messages
  std::uint32_t dequeue_count = 0; ///< times it was received, this get included (poison detection)
  std::optional<std::chrono::system_clock::time_point> insertion_time;
  std::optional<std::chrono::system_clock::time_point> expiration_time; ///< time_point::max() for TTL -1
  std::optional<std::chrono::system_clock::time_point> time_next_visible; ///< empty when peeked
  std::string text;         ///< decoded text (the raw MessageText when `undecodable`)
  bool undecodable = false; ///< base64 expected, but MessageText was not valid base64
};

/// What Put Message returns.
struct put_message_result {
  std::string message_id;
  std::string pop_receipt; ///< lets the sender update/delete it without receiving it
  std::optional<std::chrono::system_clock::time_point> insertion_time;
  std::optional<std::chrono::system_clock::time_point> expiration_time; ///< max() for TTL -1
  std::optional<std::chrono::system_clock::time_point> time_next_visible;
};

/// What Update Message returns: the NEW pop receipt (the old one is invalid from now on).
struct update_message_result {
  std::string pop_receipt;
  std::optional<std::chrono::system_clock::time_point> time_next_visible;
};

// -- per-call options -----------------------------------------------------------------------------

/// Options of put_message().
struct put_message_options {
  std::chrono::seconds visibility_timeout{0};  ///< 0–7 days hidden after the put; < ttl
  std::optional<std::chrono::seconds> ttl;     ///< ≥ 1 s or message_ttl_infinite; unset = 7 days
  message_encoding encoding = message_encoding::base64;
};

/// Options of get_messages().
struct get_messages_options {
  std::uint32_t count = 1;                      ///< numofmessages, 1–32
  std::chrono::seconds visibility_timeout{30};  ///< 1 s – 7 days the messages stay hidden
  message_encoding encoding = message_encoding::base64;
};

/// Options of peek_messages().
struct peek_messages_options {
  std::uint32_t count = 1; ///< numofmessages, 1–32
  message_encoding encoding = message_encoding::base64;
};

/// Options of update_message().
struct update_message_options {
  std::chrono::seconds visibility_timeout{0}; ///< 0 s – 7 days from now until visible again
  std::optional<std::string> text;            ///< new text; unset keeps the current one
  message_encoding encoding = message_encoding::base64;
};

/// Queue service client. Thread-safe: const methods only, copies share the pipeline.
/// Every call validates its input first (invalid_argument / limit_exceeded, nothing sent),
/// then sends through the pipeline, which retries 408/429/5xx and transport errors. Put Message
/// is at-least-once: a retried put may enqueue the message twice, so consumers must be
/// idempotent. Status mapping: 404 not_found, 409 conflict, 413 limit_exceeded, 403 auth,
/// other 4xx bad_request; a 2xx body that does not parse is bad_response. No call throws.
class queue_client {
public:
  /// A client sending through `p` (which must have a queue endpoint).
  explicit queue_client(pipeline p) : pipeline_(std::move(p)) {}

  // -- queues (REST "Create Queue", "Delete Queue", "Get Queue Metadata", "Clear Messages") -----

  /// Creates the queue; true when created, false when it already existed (204: same, i.e. no,
  /// metadata). Errors: conflict (409 QueueAlreadyExists with other metadata), invalid_argument.
  [[nodiscard]] result<bool> create_queue(std::string_view queue) const;
  /// Deletes the queue and its messages. Errors: not_found (404 QueueNotFound).
  [[nodiscard]] result<void> delete_queue(std::string_view queue) const;
  /// The service's approximate number of messages (x-ms-approximate-messages-count): it may
  /// lag and counts invisible messages too. Errors: not_found, bad_response (header missing).
  [[nodiscard]] result<std::uint64_t> approximate_message_count(std::string_view queue) const;
  /// Deletes every message of the queue. Errors: not_found.
  [[nodiscard]] result<void> clear_messages(std::string_view queue) const;

  // -- messages (REST "Put Message", "Get Messages", "Peek Messages", "Delete Message",
  //    "Update Message") --------------------------------------------------------------------------

  /// Enqueues `text` (encoded per opts.encoding). Errors: limit_exceeded (> 64 KiB encoded),
  /// invalid_argument (visibility/TTL out of range, visibility ≥ TTL), not_found (queue).
  [[nodiscard]] result<put_message_result> put_message(std::string_view queue, std::string_view text,
                                                       const put_message_options& opts = {}) const;

  /// Receives up to opts.count messages, hiding them for opts.visibility_timeout; an empty
  /// vector when none is visible. Errors: invalid_argument (count not 1–32, timeout not
  /// 1 s – 7 days), not_found, bad_response (malformed XML).
  [[nodiscard]] result<std::vector<queue_message>>
  get_messages(std::string_view queue, const get_messages_options& opts = {}) const;

  /// Looks at up to opts.count visible messages without hiding them or counting a dequeue
  /// (no pop receipt). Errors: as get_messages().
  [[nodiscard]] result<std::vector<queue_message>>
  peek_messages(std::string_view queue, const peek_messages_options& opts = {}) const;

  /// Deletes a received message. Errors: precondition_failed with service_code
  /// "PopReceiptMismatch" (400: the receipt is stale — the message was received again or
  /// updated since), not_found (404 MessageNotFound: deleted or expired), invalid_argument.
  /// A 404 on a RETRY means an earlier attempt deleted it: success.
  [[nodiscard]] result<void> delete_message(std::string_view queue, std::string_view message_id,
                                            std::string_view pop_receipt) const;

  /// Changes a received message's visibility (and text when opts.text is set); returns the new
  /// pop receipt. Errors: as delete_message(); limit_exceeded (new text over 64 KiB). If an
  /// earlier attempt landed and its answer was lost, the retry fails with PopReceiptMismatch
  /// and the new receipt is unknown: the message reappears after the visibility timeout.
  [[nodiscard]] result<update_message_result>
  update_message(std::string_view queue, std::string_view message_id,
                 std::string_view pop_receipt, const update_message_options& opts = {}) const;

  /// The pipeline requests go through.
  const pipeline& transport_pipeline() const noexcept { return pipeline_; }

private:
  pipeline pipeline_;
};

} // namespace shoal::storage
