// The draft page: Uppy's Dashboard uploading straight to S3 through the draft's
// Companion-compatible routes (parts in parallel, each with its Content-MD5: parallel-s3.js),
// the draft's file list, and the publish button.
// Bundled by scripts/web-assets.sh (esbuild) into static/build/ (upload.{js,css}, md5-worker.js).
import AwsS3 from '@uppy/aws-s3'
import Uppy from '@uppy/core'
import Dashboard from '@uppy/dashboard'
import '@uppy/core/css/style.min.css'
import '@uppy/dashboard/css/style.min.css'
import ParallelS3 from './parallel-s3.js'

// `?uploader=stock`: stock Uppy's own S3 plugin instead, against the same routes (what any site
// with an Uppy of its own uses: kept working, and tested in a browser).
const stockUppy = new URLSearchParams(window.location.search).get('uploader') === 'stock'

const page = document.querySelector('[data-draft-api]')
const api = page.dataset.draftApi // e.g. /draft/records/77cjt-pzn05
const status = document.getElementById('status')
const fileList = document.getElementById('file-list')

function say(message) {
  status.textContent = message
}

function formatSize(bytes) {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit += 1
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]} (${bytes.toLocaleString('en')} bytes)`
}

function cell(row, content) {
  const td = row.insertCell()
  if (content instanceof Node) td.append(content)
  else td.textContent = content
  return td
}

async function refreshFiles() {
  const response = await fetch(`${api}/files/`, { headers: { Accept: 'application/json' } })
  if (!response.ok) {
    say(`Could not list the files: HTTP ${response.status}`)
    return
  }
  const { entries } = await response.json()
  const body = fileList.tBodies[0]
  body.replaceChildren()
  for (const entry of entries) {
    const row = body.insertRow()
    row.dataset.key = entry.key
    row.dataset.status = entry.status
    cell(row, entry.key).className = 'key'
    cell(row, formatSize(entry.size)).className = 'size'
    const checksum = cell(row, entry.checksum ?? '')
    checksum.className = 'checksum'
    cell(row, entry.status)
    if (entry.links.content) {
      const link = document.createElement('a')
      link.href = entry.links.content
      link.textContent = 'Download'
      link.setAttribute('aria-label', `Download ${entry.key}`)
      cell(row, link)
    } else {
      cell(row, '')
    }
  }
  document.getElementById('no-files').hidden = entries.length > 0
  fileList.hidden = entries.length === 0
}

async function refreshUntilSettled(key, tries = 20) {
  for (let i = 0; i < tries; i++) {
    await refreshFiles()
    const row = [...fileList.tBodies[0].rows].find((r) => r.dataset.key === key)
    if (!row || row.dataset.status !== 'pending') return
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
}

function startUploader() {
  const uppy = new Uppy({ id: 'draft-upload', autoProceed: false })
    .use(Dashboard, {
      inline: true,
      target: '#uploader',
      height: 380,
      width: '100%',
      showProgressDetails: true,
      proudlyDisplayPoweredByUppy: false,
      note: 'Files go straight to S3, several parts at once, each checked by S3 against its MD5; '
        + 'the server only signs the requests.',
    })
  if (stockUppy) {
    // Every upload is a tracked multipart upload (GET s3/params is refused but for empty files).
    uppy.use(AwsS3, { companionEndpoint: `${api}/uppy`, shouldUseMultipart: true })
    // Companion's protocol carries no file size; the server needs it to plan the parts.
    uppy.on('file-added', (file) => uppy.setFileMeta(file.id, { size: file.size }))
  } else {
    // Settings and why: docs/demo.md, "Upload settings".
    uppy.use(ParallelS3, { companionEndpoint: `${api}/uppy` })
  }
  uppy.on('upload-success', (file) => {
    say(`${file.name} uploaded.`)
    refreshFiles()
  })
  uppy.on('upload-error', (file, error) => say(`${file.name} failed: ${error.message}. Use Retry to try again.`))
  // Uppy aborts a cancelled upload with a request of its own, after this event: list the files
  // until the pending entry is gone (or a few seconds passed), not just once.
  uppy.on('file-removed', (file) => refreshUntilSettled(file.name))
  uppy.on('complete', ({ successful = [], failed = [] }) => {
    const done = `${successful.length} file${successful.length === 1 ? '' : 's'} uploaded`
    say(failed.length ? `${done}; ${failed.length} failed: use Retry to resume.` : `${done}.`)
    if (failed.length) refreshFiles() // each success already listed the files
  })
  return uppy
}

// For scripts and tests: the page's Uppy instance (none on a published record).
window.uppy = document.getElementById('uploader') ? startUploader() : null

document.getElementById('publish')?.addEventListener('click', async () => {
  if (!window.confirm('Publish this draft? Its files cannot be changed afterwards.')) return
  const response = await fetch(`${api}/publish`, {
    method: 'POST',
    headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
    body: '{}',
  })
  const body = await response.json()
  if (response.ok) {
    window.location.assign(page.dataset.recordPage)
  } else {
    say(`Not published: ${body.message ?? `HTTP ${response.status}`}`)
  }
})

refreshFiles()
