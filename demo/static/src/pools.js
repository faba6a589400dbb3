// What the parallel uploader (parallel-s3.js) shares between files: a limit on parts in flight,
// and the Web Workers that hash parts (md5-worker.js).

/** A counting semaphore: at most `size` holders at once. */
export class Limiter {
  constructor(size) {
    this.free = size
    this.waiting = []
  }

  async acquire(signal) {
    signal?.throwIfAborted()
    if (this.free > 0) {
      this.free -= 1
      return
    }
    await new Promise((resolve, reject) => {
      const entry = { resolve, reject }
      this.waiting.push(entry)
      signal?.addEventListener('abort', () => {
        const i = this.waiting.indexOf(entry)
        if (i >= 0) {
          this.waiting.splice(i, 1)
          reject(signal.reason)
        }
      }, { once: true })
    })
  }

  release() {
    const next = this.waiting.shift()
    if (next) next.resolve()
    else this.free += 1
  }

  async run(task, signal) {
    await this.acquire(signal)
    try {
      return await task()
    } finally {
      this.release()
    }
  }
}

/** Web Workers that compute base64 MD5 digests of blobs. */
export class Md5Pool {
  constructor(size) {
    this.size = size
    this.workers = []
    this.calls = new Map()
    this.nextId = 0
  }

  /** Start the workers (each loads md5-worker.js once); md5() does it too when needed. */
  start() {
    if (this.workers.length) return
    for (let i = 0; i < this.size; i++) {
      const worker = new Worker(new URL('./md5-worker.js', import.meta.url), { type: 'module' })
      worker.pending = 0
      worker.onmessage = ({ data }) => {
        const call = this.calls.get(data.id)
        this.calls.delete(data.id)
        worker.pending -= 1
        if (data.error) call.reject(new Error(`MD5 of a part failed: ${data.error}`))
        else call.resolve(data.md5)
      }
      this.workers.push(worker)
    }
  }

  md5(blob) {
    this.start()
    const worker = this.workers.reduce((a, b) => (b.pending < a.pending ? b : a))
    const id = this.nextId++
    worker.pending += 1
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject })
      worker.postMessage({ id, blob })
    })
  }

  terminate() {
    for (const worker of this.workers.splice(0)) worker.terminate()
  }
}
