// A fixed pool of sleeping workers. One parallel call at a time: the job is published under a mutex,
// workers and the caller pull task numbers from an atomic counter. A worker joins the job only while
// it is open; the caller closes it once every task has been taken and then waits for the workers
// that joined (so `fn` can live on the caller's stack). A worker that wakes late, after the caller
// took the last task, stays out: the call never waits on a wake-up (on a VM an idle vCPU can take a
// millisecond or more to wake).
#include "dsa/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace dsa {
namespace {

thread_local bool t_inside_task = false;

class Pool {
 public:
  ~Pool() { resize(0); }

  void set_threads(int n) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    resize(std::max(0, n - 1));
    threads_ = std::max(1, n);
  }

  int threads() const { return threads_; }

  void run(int64_t n_tasks, const std::function<void(int64_t, int)>& fn) {
    if (n_tasks <= 0) return;
    if (t_inside_task || n_tasks == 1 || threads_ == 1) {
      const bool was = t_inside_task;
      t_inside_task = true;
      for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
      t_inside_task = was;
      return;
    }
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    const int helpers = std::min<int64_t>(static_cast<int64_t>(workers_.size()), n_tasks - 1);
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      n_tasks_ = n_tasks;
      next_.store(0);
      active_ = 0;
      wanted_ = helpers;
      open_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lk(m_);
    open_ = false;  // every task is taken: workers that have not joined yet stay out
    done_cv_.wait(lk, [&] { return active_ == 0; });
    fn_ = nullptr;
    // A task that threw (e.g. std::bad_alloc) must not terminate a worker thread: the first
    // exception is carried to the caller, whose kernel turns it into a Status.
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      lk.unlock();
      std::rethrow_exception(e);
    }
  }

 private:
  void work(int thread) {
    t_inside_task = true;
    for (;;) {
      int64_t t = next_.fetch_add(1);
      if (t >= n_tasks_) break;
      try {
        (*fn_)(t, thread);
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_tasks_);  // skip the remaining tasks
      }
    }
    t_inside_task = false;
  }

  // `seen` starts at the generation current when the worker is made, so that it never takes an
  // earlier job for a new one.
  void worker_main(int id, uint64_t seen) {
    for (;;) {
      // Spin briefly before sleeping: kernels issue parallel regions back to back, and a condition
      // variable wake-up costs tens of microseconds.
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || (generation_ != seen && id <= wanted_); });
        if (stop_) return;
        seen = generation_.load();
        if (!open_) continue;  // woke after the caller took the last task
        ++active_;
      }
      work(id);
      std::lock_guard<std::mutex> lk(m_);
      if (--active_ == 0) done_cv_.notify_one();
    }
  }

  void resize(int n_workers) {
    if (static_cast<int>(workers_.size()) == n_workers) return;
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    stop_ = false;
    const uint64_t now = generation_.load();  // no job is in flight: callers hold run_mutex_
    for (int i = 0; i < n_workers; ++i) workers_.emplace_back([this, i, now] { worker_main(i + 1, now); });
  }

  std::mutex run_mutex_;  // one parallel call at a time
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_ = 0, wanted_ = 0;
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  bool open_ = false;  // the current job still takes helpers
  int threads_ = 1;
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool* p = [] {
    auto* q = new Pool();  // never destroyed: workers must not be joined during static teardown
    unsigned hc = std::thread::hardware_concurrency();
    q->set_threads(hc == 0 ? 1 : static_cast<int>(hc));
    return q;
  }();
  return *p;
}

}  // namespace

void parallel_tasks(int64_t n_tasks, const std::function<void(int64_t, int)>& fn) { pool().run(n_tasks, fn); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = static_cast<int64_t>(num_threads()) * 4;
  const int64_t chunks = std::max<int64_t>(1, std::min((n + grain - 1) / grain, max_chunks));
  const int64_t step = (n + chunks - 1) / chunks;
  pool().run((n + step - 1) / step, [&](int64_t c, int thread) {
    const int64_t b = c * step;
    fn(b, std::min(n, b + step), thread);
  });
}

void set_num_threads(int n) { pool().set_threads(std::clamp(n, 1, 1024)); }
int num_threads() { return pool().threads(); }

}  // namespace dsa
