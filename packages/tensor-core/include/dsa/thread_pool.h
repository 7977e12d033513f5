// One kernel thread pool per process image (each addon links its own copy; the fused addon has one
// for all four stages). Workers sleep on a condition variable when idle.
#pragma once
#include <cstdint>
#include <functional>

namespace dsa {

// Run fn(task, thread) for task in [0, n_tasks) on the pool; the calling thread takes part.
// Tasks are handed out dynamically. Calls from inside a task run inline (no nested parallelism),
// and concurrent calls from different threads are serialized. If a task throws, the remaining tasks
// are skipped and the first exception is rethrown in the calling thread.
void parallel_tasks(int64_t n_tasks, const std::function<void(int64_t task, int thread)>& fn);

// Split [0, n) into chunks of at least `grain` and run fn(begin, end, thread) on the pool.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end, int thread)>& fn);

void set_num_threads(int n);  // clamped to [1, 1024]
int num_threads();            // threads a parallel call uses (including the caller)

}  // namespace dsa
