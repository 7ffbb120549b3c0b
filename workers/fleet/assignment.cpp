#include "workers/fleet/assignment.hpp"

#include <algorithm>
#include <set>
#include <tuple>
#include <unordered_map>

namespace shoal::workers::fleet {
namespace {

// 64-bit FNV-1a over the host name, then the shard mixed in with splitmix64: a fixed,
// platform-independent score (std::hash may differ between builds, which would make two
// coordinators of different versions disagree).
std::uint64_t score(const std::string& host, std::uint32_t shard) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : host) {
    h ^= c;
    h *= 1099511628211ull;
  }
  std::uint64_t z = h ^ (static_cast<std::uint64_t>(shard) * 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<assignment_host> unique_hosts(const std::vector<assignment_host>& hosts) {
  std::vector<assignment_host> out;
  std::set<std::string, std::less<>> seen;
  for (const auto& h : hosts)
    if (seen.insert(h.host).second) out.push_back(h);
  bool any = std::any_of(out.begin(), out.end(), [](const auto& h) { return h.weight > 0; });
  if (!any)
    for (auto& h : out) h.weight = 1;
  return out;
}

} // namespace

std::map<std::string, std::uint32_t, std::less<>> shard_quotas(std::uint32_t shards,
                                                               const std::vector<assignment_host>& in) {
  std::map<std::string, std::uint32_t, std::less<>> quota;
  auto hosts = unique_hosts(in);
  if (hosts.empty()) return quota;
  std::uint64_t total = 0;
  for (const auto& h : hosts) total += h.weight;
  // floor(shards × w / total), then the leftover shards to the largest remainders, ties by name.
  std::vector<std::tuple<std::uint64_t, std::string>> rest;
  std::uint32_t given = 0;
  for (const auto& h : hosts) {
    std::uint64_t num = static_cast<std::uint64_t>(shards) * h.weight;
    auto q = static_cast<std::uint32_t>(num / total);
    quota[h.host] = q;
    given += q;
    if (h.weight > 0) rest.emplace_back(num % total, h.host);
  }
  std::sort(rest.begin(), rest.end(), [](const auto& a, const auto& b) {
    if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
    return std::get<1>(a) < std::get<1>(b);
  });
  for (std::size_t i = 0; given < shards && i < rest.size(); ++i, ++given) ++quota[std::get<1>(rest[i])];
  return quota;
}

shard_map assign_shards(std::uint32_t shards, const std::vector<assignment_host>& in,
                        const shard_map& previous) {
  shard_map out;
  auto hosts = unique_hosts(in);
  if (hosts.empty()) return out;
  auto quota = shard_quotas(shards, hosts);
  for (const auto& h : hosts) out[h.host];

  std::vector<std::int64_t> owner(shards, -1); // index into hosts
  std::vector<std::uint32_t> count(hosts.size(), 0);
  std::unordered_map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < hosts.size(); ++i) index.emplace(hosts[i].host, i);

  // 1. Keep what a present host already had, up to its quota. Which of its shards it keeps when
  //    over quota: the ones it scores highest, so the choice does not depend on list order.
  for (const auto& [name, list] : previous) {
    auto it = index.find(name);
    if (it == index.end()) continue;
    std::size_t hi = it->second;
    std::vector<std::uint32_t> mine;
    for (auto s : list)
      if (s < shards && owner[s] < 0) mine.push_back(s);
    std::sort(mine.begin(), mine.end(), [&](std::uint32_t a, std::uint32_t b) {
      auto sa = score(name, a), sb = score(name, b);
      return sa != sb ? sa > sb : a < b;
    });
    for (auto s : mine) {
      if (count[hi] >= quota[name]) break;
      owner[s] = static_cast<std::int64_t>(hi);
      ++count[hi];
    }
  }
  // 2. The rest by rendezvous order: all (score, shard, host) pairs of free shards, best first;
  //    a pair wins when its shard is still free and its host still under quota.
  struct pair_t {
    std::uint64_t score;
    std::uint32_t shard;
    std::uint32_t host;
  };
  std::vector<pair_t> pairs;
  for (std::uint32_t s = 0; s < shards; ++s) {
    if (owner[s] >= 0) continue;
    for (std::size_t h = 0; h < hosts.size(); ++h)
      if (count[h] < quota[hosts[h].host])
        pairs.push_back({score(hosts[h].host, s), s, static_cast<std::uint32_t>(h)});
  }
  std::sort(pairs.begin(), pairs.end(), [&](const pair_t& a, const pair_t& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.shard != b.shard) return a.shard < b.shard;
    return hosts[a.host].host < hosts[b.host].host;
  });
  for (const auto& p : pairs) {
    if (owner[p.shard] >= 0 || count[p.host] >= quota[hosts[p.host].host]) continue;
    owner[p.shard] = p.host;
    ++count[p.host];
  }
  for (std::uint32_t s = 0; s < shards; ++s)
    if (owner[s] >= 0) out[hosts[static_cast<std::size_t>(owner[s])].host].push_back(s);
  return out;
}

std::uint32_t moved_shards(const shard_map& a, const shard_map& b) {
  std::map<std::uint32_t, std::string> oa, ob;
  for (const auto& [h, l] : a)
    for (auto s : l) oa[s] = h;
  for (const auto& [h, l] : b)
    for (auto s : l) ob[s] = h;
  std::uint32_t moved = 0;
  for (const auto& [s, h] : oa) {
    auto it = ob.find(s);
    if (it == ob.end() || it->second != h) ++moved;
  }
  for (const auto& [s, h] : ob)
    if (!oa.contains(s)) ++moved;
  return moved;
}

} // namespace shoal::workers::fleet
