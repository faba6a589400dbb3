// An Uppy uploader that sends a file's parts to S3 in parallel, each with a Content-MD5 that S3 checks.
//
// Stock @uppy/aws-s3 6.x sends the parts of a file one after the other and signs each one in
// its own request to the app (410 parts of 5 MiB for 2 GiB: 410 requests, one part in flight).
// This plugin speaks the same Companion-compatible routes of the draft, plus two additions of
// the server (oarepo_s3/views/companion.py):
//
// - part size chosen for the file (`partSizeFor`), asked for with `metadata.partSize`; the
//   server checks it and answers the size it planned, which the plugin then uses;
// - `partsInFlight` parts on the way to S3 at once (shared by all files);
// - batch signing: parts are hashed ahead (MD5 in Web Workers, `md5-worker.js`) and signed in
//   windows, many parts per request (`POST .../batch` with each part's Content-MD5, signed into
//   its URL, so S3 refuses other bytes), cached per upload and signed again before they expire;
// - pause (aborts the parts in flight), resume and retry (ask the app which parts S3 holds and
//   send the rest), cancel (aborts the upload in S3), each part retried on network errors.
import { BasePlugin, EventManager } from '@uppy/core'
import { fetcher, filterFilesToEmitUploadStarted, filterFilesToUpload } from '@uppy/core/utils'
import { Limiter, Md5Pool } from './pools.js'

const MiB = 1024 * 1024
const MIN_PART_SIZE = 5 * MiB // S3's minimum for every part but the last
const MAX_PARTS = 10000

/**
 * The part size for a file of `size` bytes: `target` for big files, smaller for small ones so
 * that they still fill `partsInFlight` (never under S3's 5 MiB), and large enough for 10,000
 * parts. Whole MiB.
 */
export function partSizeFor(size, { target = 16 * MiB, partsInFlight = 6 } = {}) {
  const wholeMiB = (bytes) => Math.ceil(bytes / MiB) * MiB
  const spread = wholeMiB(size / partsInFlight)
  return Math.max(MIN_PART_SIZE, Math.min(target, spread), wholeMiB(size / MAX_PARTS))
}

const abortError = () => new DOMException('Upload aborted', 'AbortError')
const isAbort = (error) => error?.name === 'AbortError'

class HttpError extends Error {
  constructor(message, status) {
    super(message)
    this.status = status
  }
}

/** What one file's upload keeps across pause, resume and retry (until it completes or is cancelled). */
class UploadState {
  constructor() {
    this.uploadId = null
    this.key = null
    this.partSize = null
    this.etags = new Map() // part number -> ETag: in S3
    this.digests = new Map() // part number -> base64 MD5
    this.signed = new Map() // part number -> {url, headers, expiresAt}
  }
}

export default class ParallelS3 extends BasePlugin {
  static VERSION = '1.0.0'

  constructor(uppy, opts) {
    const hardware = globalThis.navigator?.hardwareConcurrency || 2
    super(uppy, {
      partsInFlight: 6, // Chromium and Firefox open at most 6 HTTP/1.1 connections to one host
      filesInFlight: 3,
      targetPartSize: 16 * MiB,
      firstWindow: 6, // parts hashed and signed in the first request; windows then double
      maxWindow: 64,
      hashWorkers: Math.max(2, Math.min(4, hardware)),
      resignMarginSeconds: 60,
      partRetries: 3,
      progressIntervalMs: 250,
      ...opts,
    })
    this.type = 'uploader'
    this.id = this.opts.id || 'ParallelS3'
    this.parts = new Limiter(this.opts.partsInFlight)
    this.files = new Limiter(this.opts.filesInFlight)
    this.md5s = new Md5Pool(this.opts.hashWorkers)
    this.states = new Map() // file id -> UploadState
  }

  install() {
    const { capabilities } = this.uppy.getState()
    this.uppy.setState({ capabilities: { ...capabilities, resumableUploads: true } })
    this.uppy.addUploader(this.#upload)
    // The hashing workers load with the page, not when Upload is clicked.
    this.md5s.start()
  }

  uninstall() {
    this.uppy.removeUploader(this.#upload)
    this.md5s.terminate()
  }

  #upload = async (fileIDs) => {
    const files = filterFilesToUpload(this.uppy.getFilesByIds(fileIDs))
    this.uppy.emit('upload-start', filterFilesToEmitUploadStarted(files))
    await Promise.allSettled(files.map((file) => this.files.run(() => {
      const current = this.uppy.getFile(file.id) // removed while it waited?
      return current ? new FileUpload(this, current).done : undefined
    })))
  }

  /** A request to the Companion-compatible routes; a refusal becomes an Error with the server's message. */
  async api(path, { method = 'GET', json, signal, query } = {}) {
    const url = `${this.opts.companionEndpoint}/s3${path}${query ? `?${new URLSearchParams(query)}` : ''}`
    const response = await fetch(url, {
      method,
      signal,
      headers: json === undefined ? { Accept: 'application/json' }
        : { Accept: 'application/json', 'Content-Type': 'application/json' },
      body: json === undefined ? undefined : JSON.stringify(json),
    })
    const body = await response.json().catch(() => ({}))
    if (!response.ok) {
      const detail = body.errors?.map((e) => `${e.field}: ${e.message}`).join('; ') || body.message
      throw new HttpError(`${method} ${path}: HTTP ${response.status}${detail ? ` (${detail})` : ''}`, response.status)
    }
    return body
  }
}

/** One file: started by the plugin, and again on resume and retry (its UploadState persists). */
class FileUpload {
  constructor(plugin, file) {
    this.plugin = plugin
    this.uppy = plugin.uppy
    this.opts = plugin.opts
    this.file = file
    this.data = file.data
    if (!plugin.states.has(file.id)) plugin.states.set(file.id, new UploadState())
    this.state = plugin.states.get(file.id)
    this.controller = null
    this.events = new EventManager(this.uppy)
    this.done = new Promise((resolve) => {
      this.finish = resolve
    })
    this.events.onFileRemove(file.id, () => this.cancel())
    this.events.onCancelAll(file.id, () => this.cancel())
    this.events.onFilePause(file.id, (isPaused) => (isPaused ? this.pause() : this.start()))
    this.events.onPauseAll(file.id, () => this.pause())
    this.events.onResumeAll(file.id, () => this.start())
    this.events.onRetry(file.id, () => this.start())
    this.events.onRetryAll(file.id, () => this.start())
    this.start()
  }

  pause() {
    this.controller?.abort(abortError())
  }

  cancel() {
    this.pause()
    this.events.remove()
    const { uploadId, key } = this.state
    this.plugin.states.delete(this.file.id)
    if (uploadId) {
      this.plugin.api(`/multipart/${encodeURIComponent(uploadId)}`, { method: 'DELETE', query: { key } })
        .catch((error) => this.uppy.log(error, 'warning'))
    }
    this.finish()
  }

  async start() {
    this.controller?.abort(abortError())
    const controller = new AbortController()
    this.controller = controller
    const { signal } = controller
    try {
      const location = this.data.size === 0 ? await this.#sendEmpty(signal) : await this.#sendMultipart(signal)
      if (signal.aborted) return
      this.events.remove()
      this.plugin.states.delete(this.file.id)
      const file = this.uppy.getFile(this.file.id) // gone if removed meanwhile: nothing to report
      if (file) {
        this.uppy.emit('upload-success', file, {
          status: 200, body: { location, key: this.state.key ?? this.file.name }, uploadURL: location,
        })
      }
      this.finish()
    } catch (error) {
      if (isAbort(error) || signal.aborted) return // paused or cancelled: not a failure
      this.events.remove() // Retry starts a new FileUpload with the same state
      this.uppy.emit('upload-error', this.uppy.getFile(this.file.id), error)
      this.finish()
    }
  }

  async #sendEmpty(signal) {
    // No part to send: the app creates the empty file (Uppy's form POST protocol, `s3/empty`).
    const params = await this.plugin.api('/params', {
      signal, query: { filename: this.file.name, type: this.file.type || '', 'metadata[size]': '0' },
    })
    const form = new FormData()
    for (const [name, value] of Object.entries(params.fields)) form.append(name, value)
    form.append('file', this.data)
    const response = await fetch(params.url, { method: params.method, body: form, signal })
    if (!response.ok) throw new HttpError(`empty file: HTTP ${response.status}`, response.status)
    return response.headers.get('Location') ?? params.url
  }

  async #sendMultipart(signal) {
    const { state } = this
    if (state.uploadId) {
      // Resume or retry: S3 is the truth about which parts arrived.
      const listed = await this.plugin.api(`/multipart/${encodeURIComponent(state.uploadId)}`,
        { signal, query: { key: state.key } })
      state.etags = new Map(listed.map((p) => [Number(p.PartNumber), String(p.ETag)]))
    } else {
      const created = await this.plugin.api('/multipart', {
        method: 'POST', signal,
        json: {
          filename: this.file.name, type: this.file.type || '',
          metadata: { name: this.file.name, size: this.data.size, partSize: partSizeFor(this.data.size, {
            target: this.opts.targetPartSize, partsInFlight: this.opts.partsInFlight,
          }) },
        },
      })
      Object.assign(state, { uploadId: created.uploadId, key: created.key, partSize: created.partSize })
    }
    const count = Math.max(1, Math.ceil(this.data.size / state.partSize))
    this.count = count
    this.uploaded = new Map([...state.etags.keys()].map((n) => [n, this.#range(n).size]))
    this.#progress(true)
    await this.#sendParts(count, signal)
    const parts = [...state.etags].sort((a, b) => a[0] - b[0]).map(([PartNumber, ETag]) => ({ PartNumber, ETag }))
    const completed = await this.plugin.api(`/multipart/${encodeURIComponent(state.uploadId)}/complete`, {
      method: 'POST', signal, query: { key: state.key }, json: { parts },
    })
    return completed.location
  }

  #range(n) {
    const start = (n - 1) * this.state.partSize
    const end = Math.min(start + this.state.partSize, this.data.size)
    return { start, end, size: end - start }
  }

  #progress(force = false) {
    // Every progress event re-renders the Dashboard: a few a second are enough to watch.
    const now = Date.now()
    if (!force && now - (this.lastProgress ?? 0) < this.opts.progressIntervalMs) return
    this.lastProgress = now
    let bytes = 0
    for (const value of this.uploaded.values()) bytes += value
    this.uppy.emit('upload-progress', this.uppy.getFile(this.file.id), {
      uploadStarted: this.file.progress.uploadStarted ?? Date.now(), bytesUploaded: bytes, bytesTotal: this.data.size,
    })
  }

  async #sendParts(count, outer) {
    // One failed part stops the others (the upload then reports the error; Retry resumes).
    const run = new AbortController()
    const stop = () => run.abort(outer.reason)
    outer.addEventListener('abort', stop, { once: true })
    const todo = []
    for (let n = 1; n <= count; n++) if (!this.state.etags.has(n)) todo.push(n)
    this.signer = new Signer(this, todo, run.signal)
    let next = 0
    const lane = async () => {
      while (next < todo.length) {
        const n = todo[next++]
        await this.plugin.parts.run(() => this.#sendPart(n, run.signal), run.signal)
      }
    }
    try {
      await Promise.all(Array.from({ length: Math.min(this.opts.partsInFlight, todo.length) }, () => lane().catch(
        (error) => {
          run.abort(error)
          throw error
        })))
    } finally {
      outer.removeEventListener('abort', stop)
    }
  }

  async #sendPart(n, signal) {
    const range = this.#range(n)
    for (let attempt = 0; ; attempt++) {
      const { url, headers } = await this.signer.signed(n)
      try {
        const xhr = await fetcher(url, {
          method: 'PUT', body: this.data.slice(range.start, range.end), headers, signal,
          retries: this.opts.partRetries, timeout: 60_000,
          // Network errors and 5xx are retried here; a 4xx is handled below.
          shouldRetry: (x) => x.status === 0 || x.status >= 500 || x.status === 429,
          onUploadProgress: (event) => {
            this.uploaded.set(n, event.loaded)
            this.#progress()
          },
        })
        const etag = xhr.getResponseHeader('ETag')
        if (!etag) throw new Error('S3 sent no ETag: its CORS must expose the ETag header')
        this.state.etags.set(n, etag.replace(/^"|"$/g, ''))
        this.uploaded.set(n, range.size)
        this.#progress(this.state.etags.size === this.count)
        return
      } catch (error) {
        if (isAbort(error) || signal.aborted) throw signal.reason ?? error
        const status = error.request?.status
        this.uploaded.set(n, 0)
        this.#progress(true)
        // 403: the URL expired (or the clock moved): sign again. 400 BadDigest: the bytes changed
        // since they were hashed (a file edited meanwhile): hash again, once.
        if ((status === 403 || status === 400) && attempt < 1) {
          this.state.signed.delete(n)
          if (status === 400) this.state.digests.delete(n)
          continue
        }
        throw new Error(`part ${n} of ${this.file.name} failed: ${error.message || `HTTP ${status}`}`)
      }
    }
  }
}

/** Hashes parts ahead and signs them in windows: one request to the app for many parts. */
class Signer {
  constructor(upload, todo, signal) {
    this.upload = upload
    this.state = upload.state
    this.opts = upload.opts
    this.todo = todo // part numbers in the order they are sent
    this.position = new Map(todo.map((n, i) => [n, i]))
    this.signal = signal
    this.window = this.opts.firstWindow
    this.pending = new Map() // part number -> promise of its signing
  }

  #valid(n) {
    const signed = this.state.signed.get(n)
    return signed && signed.expiresAt - Date.now() > this.opts.resignMarginSeconds * 1000 ? signed : null
  }

  /** Part `n`'s URL and headers; also starts signing the window after it, so that it is ready in time. */
  async signed(n) {
    const index = this.position.get(n)
    const valid = this.#valid(n)
    if (!valid && !this.pending.has(n)) this.#signFrom(index).catch(() => {}) // awaited below
    const ahead = this.todo[index + this.opts.partsInFlight]
    if (ahead !== undefined && !this.#valid(ahead) && !this.pending.has(ahead)) {
      this.#signFrom(index + this.opts.partsInFlight).catch(() => {}) // a failure shows when the part is due
    }
    if (valid) return valid
    await this.pending.get(n)
    return this.#valid(n) ?? this.signed(n)
  }

  #signFrom(index) {
    const numbers = []
    for (let i = index; i < this.todo.length && numbers.length < this.window; i++) {
      const m = this.todo[i]
      if (!this.#valid(m) && !this.pending.has(m) && !this.state.etags.has(m)) numbers.push(m)
    }
    this.window = Math.min(this.window * 2, this.opts.maxWindow)
    const signing = numbers.length ? this.#sign(numbers) : Promise.resolve()
    for (const m of numbers) this.pending.set(m, signing)
    signing.finally(() => numbers.forEach((m) => this.pending.delete(m))).catch(() => {})
    return signing
  }

  async #sign(numbers) {
    const { plugin, data } = this.upload
    const { state } = this
    await Promise.all(numbers.filter((m) => !state.digests.has(m)).map(async (m) => {
      const start = (m - 1) * state.partSize
      state.digests.set(m, await plugin.md5s.md5(data.slice(start, Math.min(start + state.partSize, data.size))))
    }))
    this.signal.throwIfAborted()
    const answer = await plugin.api(`/multipart/${encodeURIComponent(state.uploadId)}/batch`, {
      method: 'POST', signal: this.signal, query: { key: state.key },
      json: { parts: numbers, content_md5: Object.fromEntries(numbers.map((m) => [String(m), state.digests.get(m)])) },
    })
    const expiresAt = Date.now() + answer.expires * 1000
    for (const m of numbers) {
      state.signed.set(m, { url: answer.presignedUrls[m], headers: answer.headers[m] ?? {}, expiresAt })
    }
  }
}
