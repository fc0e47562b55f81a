// Tests of Channel<T>: capacity, full, close, ordering, many producers and no
// loss. Run under ThreadSanitizer in CI.
#include "worker/channel.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

using ::testing::ElementsAre;

// Returns once the consumer of `channel` is blocked in a receive.
template <typename T>
void WaitUntilReceiverWaits(const Channel<T>& channel) {
  while (!channel.receiver_waiting()) std::this_thread::yield();
}

TEST(ChannelTest, AcceptsUpToCapacityThenRefuses) {
  Channel<int> channel(3);
  EXPECT_EQ(channel.capacity(), 3u);
  for (int i = 0; i < 3; ++i) {
    int value = i;
    EXPECT_TRUE(channel.TrySend(value));
  }
  EXPECT_EQ(channel.size(), 3u);
  int extra = 99;
  EXPECT_FALSE(channel.TrySend(extra));
  EXPECT_EQ(channel.size(), 3u);

  // Taking one out makes room for one more.
  EXPECT_EQ(channel.TryReceive(), 0);
  EXPECT_TRUE(channel.TrySend(extra));
  EXPECT_FALSE(channel.TrySend(extra));
}

TEST(ChannelTest, ReceivesInSendOrderAcrossWrapAround) {
  Channel<int> channel(2);
  std::vector<int> received;
  for (int i = 0; i < 7; ++i) {
    int value = i;
    ASSERT_TRUE(channel.TrySend(value));
    if (i % 2 == 1) {
      received.push_back(*channel.Receive());
      received.push_back(*channel.Receive());
    }
  }
  received.push_back(*channel.TryReceive());
  EXPECT_THAT(received, ElementsAre(0, 1, 2, 3, 4, 5, 6));
  EXPECT_EQ(channel.size(), 0u);
}

TEST(ChannelTest, RefusedValueStaysWithTheCaller) {
  Channel<std::unique_ptr<int>> channel(1);
  auto first = std::make_unique<int>(1);
  ASSERT_TRUE(channel.TrySend(first));
  EXPECT_EQ(first, nullptr);  // taken by the channel

  auto second = std::make_unique<int>(2);
  EXPECT_FALSE(channel.TrySend(second));
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(*second, 2);

  channel.Close();
  auto third = std::make_unique<int>(3);
  EXPECT_FALSE(channel.TrySend(third));
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(*third, 3);

  std::optional<std::unique_ptr<int>> got = channel.Receive();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(**got, 1);
}

TEST(ChannelTest, TryReceiveOnEmptyReturnsAtOnce) {
  Channel<int> channel(4);
  EXPECT_EQ(channel.TryReceive(), std::nullopt);
}

TEST(ChannelTest, ReceiveForTimesOutThenDeliversAndEndsWhenClosed) {
  Channel<int> channel(2);
  const absl::Time start = absl::Now();
  EXPECT_EQ(channel.ReceiveFor(absl::Milliseconds(20)), std::nullopt);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(19));
  std::thread sender([&] {
    WaitUntilReceiverWaits(channel);
    int v = 7;
    EXPECT_TRUE(channel.TrySend(v));
  });
  EXPECT_EQ(channel.ReceiveFor(absl::Seconds(30)), 7);
  sender.join();
  int v = 8;
  ASSERT_TRUE(channel.TrySend(v));
  channel.Close();
  EXPECT_EQ(channel.ReceiveFor(absl::Seconds(30)), 8);
  // Closed and drained: returns at once.
  const absl::Time closed_at = absl::Now();
  EXPECT_EQ(channel.ReceiveFor(absl::Seconds(30)), std::nullopt);
  EXPECT_LT(absl::Now() - closed_at, absl::Seconds(5));
}

TEST(ChannelTest, CloseRefusesSendsButDrainsQueuedMessages) {
  Channel<int> channel(4);
  for (int i = 0; i < 2; ++i) {
    int value = i;
    ASSERT_TRUE(channel.TrySend(value));
  }
  EXPECT_FALSE(channel.closed());
  channel.Close();
  channel.Close();  // idempotent
  EXPECT_TRUE(channel.closed());

  int late = 7;
  EXPECT_FALSE(channel.TrySend(late));
  EXPECT_EQ(channel.Receive(), 0);
  EXPECT_EQ(channel.TryReceive(), 1);
  EXPECT_EQ(channel.Receive(), std::nullopt);
  EXPECT_EQ(channel.TryReceive(), std::nullopt);
}

TEST(ChannelTest, CloseWakesABlockedReceiver) {
  Channel<int> channel(1);
  std::atomic<bool> returned{false};
  std::optional<int> result = 42;
  std::thread receiver([&] {
    result = channel.Receive();
    returned.store(true);
  });
  // The receiver blocks on the empty channel until Close.
  WaitUntilReceiverWaits(channel);
  EXPECT_FALSE(returned.load());
  channel.Close();
  receiver.join();
  EXPECT_EQ(result, std::nullopt);
}

TEST(ChannelTest, BlockedReceiverGetsALaterMessage) {
  Channel<int> channel(1);
  std::optional<int> result;
  std::thread receiver([&] { result = channel.Receive(); });
  WaitUntilReceiverWaits(channel);
  int value = 5;
  ASSERT_TRUE(channel.TrySend(value));
  receiver.join();
  EXPECT_EQ(result, 5);
}

struct Message {
  uint32_t producer = 0;
  uint32_t seq = 0;
};

// Many producers send without retrying into a small channel while one
// consumer drains it. Every message is either received exactly once or its
// send reported failure, and each producer's messages arrive in order.
TEST(ChannelTest, ManyProducersNoLossAndPerProducerOrder) {
  constexpr uint32_t kProducers = 8;
  constexpr uint32_t kPerProducer = 20000;
  Channel<Message> channel(16);

  // refused[p][s] is written only by producer p; received[p][s] only by the
  // consumer. Both are read after the joins.
  std::vector<std::vector<uint8_t>> refused(
      kProducers, std::vector<uint8_t>(kPerProducer, 0));
  std::vector<std::vector<uint8_t>> received(
      kProducers, std::vector<uint8_t>(kPerProducer, 0));
  std::vector<int64_t> last_seq(kProducers, -1);
  bool in_order = true;

  std::thread consumer([&] {
    while (std::optional<Message> m = channel.Receive()) {
      if (static_cast<int64_t>(m->seq) <= last_seq[m->producer]) {
        in_order = false;
      }
      last_seq[m->producer] = m->seq;
      ++received[m->producer][m->seq];
    }
  });

  std::vector<std::thread> producers;
  for (uint32_t p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (uint32_t s = 0; s < kPerProducer; ++s) {
        Message m{p, s};
        if (!channel.TrySend(m)) refused[p][s] = 1;
      }
    });
  }
  for (std::thread& t : producers) t.join();
  channel.Close();
  consumer.join();

  EXPECT_TRUE(in_order);
  uint64_t total_received = 0;
  uint64_t total_refused = 0;
  for (uint32_t p = 0; p < kProducers; ++p) {
    for (uint32_t s = 0; s < kPerProducer; ++s) {
      // Exactly one of: received once, or refused.
      ASSERT_EQ(received[p][s] + refused[p][s], 1)
          << "producer " << p << " seq " << s;
      total_received += received[p][s];
      total_refused += refused[p][s];
    }
  }
  EXPECT_EQ(total_received + total_refused,
            uint64_t{kProducers} * kPerProducer);
  EXPECT_GT(total_received, 0u);
}

// Producers retry refused sends: then every message arrives, in order per
// producer.
TEST(ChannelTest, ManyProducersWithRetryDeliverEverything) {
  constexpr uint32_t kProducers = 4;
  constexpr uint32_t kPerProducer = 5000;
  Channel<Message> channel(4);
  std::vector<uint32_t> next_seq(kProducers, 0);
  bool in_order = true;
  uint64_t total = 0;

  std::thread consumer([&] {
    while (std::optional<Message> m = channel.Receive()) {
      if (m->seq != next_seq[m->producer]) in_order = false;
      next_seq[m->producer] = m->seq + 1;
      ++total;
    }
  });
  std::vector<std::thread> producers;
  for (uint32_t p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (uint32_t s = 0; s < kPerProducer; ++s) {
        Message m{p, s};
        while (!channel.TrySend(m)) std::this_thread::yield();
      }
    });
  }
  for (std::thread& t : producers) t.join();
  channel.Close();
  consumer.join();

  EXPECT_TRUE(in_order);
  EXPECT_EQ(total, uint64_t{kProducers} * kPerProducer);
  for (uint32_t p = 0; p < kProducers; ++p) {
    EXPECT_EQ(next_seq[p], kPerProducer);
  }
}

// Close racing with senders: a send either lands (and is received) or fails.
TEST(ChannelTest, CloseRacingWithSendersLosesNothing) {
  constexpr int kProducers = 4;
  Channel<int> channel(64);
  std::atomic<uint64_t> sent{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&] {
      while (!stop.load()) {
        int value = 1;
        if (channel.TrySend(value)) sent.fetch_add(1);
      }
    });
  }
  uint64_t received = 0;
  for (int i = 0; i < 2000; ++i) {
    if (channel.TryReceive().has_value()) ++received;
  }
  channel.Close();
  while (channel.Receive().has_value()) ++received;
  stop.store(true);
  for (std::thread& t : producers) t.join();
  // Nothing can be sent after Close, so the drain above saw everything.
  EXPECT_EQ(channel.TryReceive(), std::nullopt);
  EXPECT_EQ(received, sent.load());
}

}  // namespace
}  // namespace poold
