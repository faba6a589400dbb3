// A Web Worker that hashes parts for their Content-MD5, off the page's main thread.
// Message in: {id, blob} (a slice of the File: posting it copies no bytes).
// Message out: {id, md5} (base64 of the 16-byte digest, as the Content-MD5 header wants it) or {id, error}.
// hash-wasm's MD5 is WebAssembly (several times faster than MD5 in plain JavaScript). The part
// is read in slices of up to 16 MiB (fewer, larger reads cost less CPU than many small ones), so
// a worker holds at most one slice in memory, whatever the part size.
import { createMD5 } from 'hash-wasm'

const SLICE = 16 * 1024 * 1024
let hasher = null
let queue = Promise.resolve()

function base64(bytes) {
  let text = ''
  for (const byte of bytes) text += String.fromCharCode(byte)
  return btoa(text)
}

async function md5(blob) {
  hasher ??= await createMD5()
  hasher.init()
  const reader = new FileReaderSync()
  for (let offset = 0; offset < blob.size; offset += SLICE) {
    hasher.update(new Uint8Array(reader.readAsArrayBuffer(blob.slice(offset, offset + SLICE))))
  }
  return base64(hasher.digest('binary'))
}

// One hasher per worker: messages are hashed one after the other, never interleaved.
self.onmessage = ({ data: { id, blob } }) => {
  queue = queue.then(async () => {
    try {
      self.postMessage({ id, md5: await md5(blob) })
    } catch (error) {
      self.postMessage({ id, error: String(error?.message ?? error) })
    }
  })
}
