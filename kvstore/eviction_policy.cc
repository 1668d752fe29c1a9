#include "kvstore/eviction_policy.h"

#include "common/status.h"

namespace strata::kvstore {
namespace {

// Least recently used first. Passed-over candidates keep their place.
class LruPolicy final : public EvictionPolicy {
 public:
  void Insert(const BlockKey& key) override {
    STRATA_CHECK(!where_.contains(key));
    order_.push_front(key);
    where_.emplace(key, order_.begin());
  }
  void Touch(const BlockKey& key) override {
    auto it = where_.find(key);
    if (it == where_.end()) return;
    order_.splice(order_.begin(), order_, it->second);
  }
  void Remove(const BlockKey& key) override {
    auto it = where_.find(key);
    if (it == where_.end()) return;
    order_.erase(it->second);
    where_.erase(it);
  }
  std::optional<BlockKey> Evict(const std::function<EvictionRank(const BlockKey&)>& rank) override {
    std::optional<BlockKey> fallback;
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
      const EvictionRank r = rank(*it);
      if (r == EvictionRank::kLeaf) {
        const BlockKey victim = *it;
        Remove(victim);
        return victim;
      }
      if (r == EvictionRank::kInnerNode && !fallback) fallback = *it;
    }
    if (fallback) Remove(*fallback);
    return fallback;
  }
  size_t size() const override { return where_.size(); }

 private:
  std::list<BlockKey> order_;  // front: most recent
  absl::flat_hash_map<BlockKey, std::list<BlockKey>::iterator> where_;
};

// S3-FIFO with block counts as the unit: small queue 10% of tracked blocks, ghost as large as main.
class S3FifoPolicy final : public EvictionPolicy {
 public:
  void Insert(const BlockKey& key) override {
    STRATA_CHECK(!where_.contains(key));
    auto ghost = ghost_where_.find(key);
    Queue queue = Queue::kSmall;
    if (ghost != ghost_where_.end()) {
      ghost_.erase(ghost->second);
      ghost_where_.erase(ghost);
      queue = Queue::kMain;
    }
    Push(queue, Node{key, 0, queue});
  }
  void Touch(const BlockKey& key) override {
    auto it = where_.find(key);
    if (it == where_.end()) return;
    if (it->second->freq < 3) ++it->second->freq;
  }
  void Remove(const BlockKey& key) override {
    auto it = where_.find(key);
    if (it == where_.end()) return;
    List(it->second->queue).erase(it->second);
    where_.erase(it);
  }
  std::optional<BlockKey> Evict(const std::function<EvictionRank(const BlockKey&)>& rank) override {
    // Every pass over a node either evicts it, moves it (small -> main) or lowers its frequency or
    // requeues a pinned/inner node; three rounds over everything bound the scan.
    std::optional<BlockKey> fallback;
    const size_t limit = 4 * where_.size() + 4;
    for (size_t step = 0; step < limit && !where_.empty(); ++step) {
      const bool from_small = !small_.empty() && (small_.size() * 10 >= where_.size() || main_.empty());
      std::list<Node>& list = from_small ? small_ : main_;
      Node node = list.back();
      list.pop_back();
      where_.erase(node.key);
      const EvictionRank r = rank(node.key);
      if (r == EvictionRank::kPinned) {
        Push(node.queue, node);  // requeue at the head; not a candidate now
        continue;
      }
      if (from_small) {
        if (node.freq > 0) {
          node.freq = 0;
          Push(Queue::kMain, node);
          continue;
        }
      } else if (node.freq > 0) {
        --node.freq;
        Push(Queue::kMain, node);
        continue;
      }
      if (r == EvictionRank::kInnerNode) {
        if (!fallback) fallback = node.key;
        Push(node.queue, node);
        continue;
      }
      if (from_small) AddGhost(node.key);
      return node.key;
    }
    if (fallback) Remove(*fallback);
    return fallback;
  }
  size_t size() const override { return where_.size(); }

 private:
  enum class Queue { kSmall, kMain };
  struct Node {
    BlockKey key;
    int freq;
    Queue queue;
  };
  std::list<Node>& List(Queue queue) { return queue == Queue::kSmall ? small_ : main_; }
  void Push(Queue queue, Node node) {
    node.queue = queue;
    std::list<Node>& list = List(queue);
    list.push_front(node);
    where_[node.key] = list.begin();
  }
  void AddGhost(const BlockKey& key) {
    if (ghost_where_.contains(key)) return;
    ghost_.push_front(key);
    ghost_where_.emplace(key, ghost_.begin());
    while (ghost_.size() > main_.size() + small_.size() + 1) {
      ghost_where_.erase(ghost_.back());
      ghost_.pop_back();
    }
  }

  std::list<Node> small_, main_;  // front: newest
  absl::flat_hash_map<BlockKey, std::list<Node>::iterator> where_;
  std::list<BlockKey> ghost_;
  absl::flat_hash_map<BlockKey, std::list<BlockKey>::iterator> ghost_where_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeEvictionPolicy(EvictionPolicyKind kind) {
  if (kind == EvictionPolicyKind::kLru) return std::make_unique<LruPolicy>();
  return std::make_unique<S3FifoPolicy>();
}

const char* EvictionPolicyName(EvictionPolicyKind kind) { return kind == EvictionPolicyKind::kLru ? "lru" : "s3fifo"; }

}  // namespace strata::kvstore
