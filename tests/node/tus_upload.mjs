// One upload by the official tus-js-client under Node.js, as a third-party tool would run it against the hub's
// tus 1.0 endpoint (tests/test_hub_tus_js.py drives it). Not part of edgenvr.
//
// Owns: turning a job (argv[2], JSON) into one tus-js-client run, and reporting what was sent and answered as
// JSON lines on stdout, so the test sees the client's requests as they leave it.
//   job: {endpoint, uploadUrl?, file, chunkSize, metadata, signer?, options?} (options: more tus-js-client
//   options, e.g. {addRequestId: true}; they cannot replace the ones below)
//   lines: {event: "request", method, url, upload_offset} before each request is sent;
//          {event: "response", method, status, upload_offset}; {event: "url", url} once the upload has one;
//          {event: "chunk", accepted, total}; last {event: "success", url, receipt} (exit 0;
//          receipt: the Edgenvr-Receipt header decoded, or null)
//          or {event: "error", status, body, message} (exit 1).
// Invariants:
// - The hub wants every request signed (RFC 9421, the box's Ed25519 key). tus-js-client cannot sign and this
//   file does not implement RFC 9421: a custom httpStack (a documented tus-js-client option) wraps the
//   default NodeHttpStack, and each request's send() first asks the test's loopback signing service (`signer`,
//   edgenvr.evidence.request_signing in Python) for the signature headers of (method, path+query, headers,
//   body unless it is a tus chunk), sets them, then sends. Without `signer` requests go out unsigned.
// - No retries (`retryDelays: null`): a run that meets a dropped link ends with an error, and resuming is a
//   new run given the upload URL (`uploadUrl`), which the test checks starts at the hub's offset.
import { readFileSync } from 'node:fs'
import { DefaultHttpStack, Upload } from 'tus-js-client'

// A chunk's body is not digested by the hub's signature check (request_signing: an Upload-Checksum, which
// tus-js-client does not send, would bind it), so it is never read here and streams to the hub as it is.
const TUS_CHUNK_TYPE = 'application/offset+octet-stream'
const job = JSON.parse(process.argv[2])

function report(line) {
  // stdout is a pipe: writes to it are synchronous on Linux, so nothing is lost at process.exit
  process.stdout.write(`${JSON.stringify(line)}\n`)
}

class SigningRequest {
  constructor(inner) {
    this._inner = inner
    this._headers = {}   // what tus-js-client set: the signer sees exactly what is sent
  }

  getMethod() { return this._inner.getMethod() }
  getURL() { return this._inner.getURL() }
  getHeader(name) { return this._inner.getHeader(name) }
  setProgressHandler(handler) { this._inner.setProgressHandler(handler) }
  abort() { return this._inner.abort() }
  getUnderlyingObject() { return this._inner.getUnderlyingObject() }

  setHeader(name, value) {
    this._headers[name] = value
    this._inner.setHeader(name, value)
  }

  async send(body = null) {
    const method = this.getMethod()
    if (job.signer) {
      const url = new URL(this.getURL())
      const chunk = this._headers['Content-Type'] === TUS_CHUNK_TYPE
      if (body != null && !chunk && !(body instanceof Uint8Array || typeof body === 'string')) {
        throw new Error(`cannot sign a ${method} body that is a stream`)   // tus-js-client sends none
      }
      const reply = await fetch(job.signer, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          method, path: url.pathname + url.search, headers: this._headers,
          body: body != null && !chunk ? Buffer.from(body).toString('base64') : null,
        }),
      })
      if (!reply.ok) throw new Error(`the signing service answered ${reply.status}: ${await reply.text()}`)
      for (const [name, value] of Object.entries(await reply.json())) this._inner.setHeader(name, value)
    }
    report({ event: 'request', method, url: this.getURL(), upload_offset: this._headers['Upload-Offset'] ?? null })
    const response = await this._inner.send(body)
    report({ event: 'response', method, status: response.getStatus(),
             upload_offset: response.getHeader('Upload-Offset') ?? null })
    return response
  }
}

class SigningHttpStack {
  constructor() { this._inner = new DefaultHttpStack({}) }
  createRequest(method, url) { return new SigningRequest(this._inner.createRequest(method, url)) }
  getName() { return 'SigningHttpStack' }
}

const upload = new Upload(readFileSync(job.file), {
  ...(job.options ?? {}),
  endpoint: job.endpoint ?? null,
  uploadUrl: job.uploadUrl ?? null,
  chunkSize: job.chunkSize,
  metadata: job.metadata ?? {},
  retryDelays: null,
  httpStack: new SigningHttpStack(),
  onUploadUrlAvailable() { report({ event: 'url', url: upload.url }) },
  onChunkComplete(_size, accepted, total) { report({ event: 'chunk', accepted, total }) },
  onSuccess({ lastResponse }) {
    const receipt = lastResponse.getHeader('Edgenvr-Receipt')
    report({ event: 'success', url: upload.url,   // the hub's receipt (base64 of its JSON text), as it came
             receipt: receipt ? Buffer.from(receipt, 'base64').toString('utf8') : null })
    process.exit(0)
  },
  onError(error) {
    const response = error.originalResponse ?? null
    report({ event: 'error', status: response ? response.getStatus() : null,
             body: response ? response.getBody() : null, message: String(error.message ?? error) })
    process.exit(1)
  },
})
upload.start()
