// A small client of Janus's HTTP API for watching one streaming-plugin mountpoint
// (docs/STREAMING.md "WebRTC through Janus"): create a Janus session with the session's
// token, attach the streaming plugin, `watch` the mountpoint with its pin, answer
// Janus's offer from an RTCPeerConnection, `start`, then long-poll events and keep the
// Janus session alive until close(). No api_secret: the token the compositing server
// made for this session opens the streaming plugin only.

let transactions = 0;
const tx = () => 'lipsync-' + (++transactions);

async function post(url, body) {
  const res = await fetch(url, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`Janus ${body.janus}: HTTP ${res.status}`);
  const reply = await res.json();
  if (reply.janus === 'error') {
    throw new Error(`Janus ${body.janus}: ${reply.error?.code} ${reply.error?.reason}`);
  }
  return reply;
}

export class JanusViewer {
  // info: SessionOutput.webrtc (janusUrl, mountpointId, pin, token, iceServers).
  // onTrack(MediaStreamTrack, MediaStream), onState(text) are called as things happen.
  // jitterBufferTargetMs: set on every receiver as its track arrives (before media flows),
  // the same for sound and video, so both start at one matched delay instead of each
  // playing as soon as it can until chromium lip-syncs them from Janus's sender reports
  // (docs/STREAMING.md "A/V offset right after subscribing"); 0 or absent: the browser's.
  constructor(info, { onTrack, onState, iceTransportPolicy, jitterBufferTargetMs } = {}) {
    this.info = info;
    this.jitterBufferTargetMs = jitterBufferTargetMs || 0;
    this.onTrack = onTrack || (() => {});
    this.onState = onState || (() => {});
    this.iceTransportPolicy = iceTransportPolicy || 'all';
    this.closed = false;
    this.pc = null;
  }

  async start() {
    const { janusUrl, token } = this.info;
    const created = await post(janusUrl, { janus: 'create', transaction: tx(), token });
    this.sessionUrl = `${janusUrl}/${created.data.id}`;
    const attached = await post(this.sessionUrl, {
      janus: 'attach', plugin: 'janus.plugin.streaming', transaction: tx(), token,
    });
    this.handleUrl = `${this.sessionUrl}/${attached.data.id}`;
    this.keepalive = setInterval(() => {
      post(this.sessionUrl, { janus: 'keepalive', transaction: tx(), token }).catch(() => {});
    }, 20000);
    this.poll();
    await post(this.handleUrl, {
      janus: 'message', transaction: tx(), token,
      body: { request: 'watch', id: this.info.mountpointId, pin: this.info.pin },
    });
    this.onState('watching');
  }

  // Long-poll GET on the session: Janus's offer, then status events.
  async poll() {
    while (!this.closed) {
      let events;
      try {
        const res = await fetch(`${this.sessionUrl}?token=${encodeURIComponent(this.info.token)}&maxev=10&rid=${Date.now()}`);
        if (!res.ok) throw new Error('HTTP ' + res.status);
        events = await res.json();
      } catch (e) {
        if (!this.closed) this.onState('janus unreachable: ' + e.message);
        return;
      }
      for (const ev of Array.isArray(events) ? events : [events]) await this.onEvent(ev);
    }
  }

  async onEvent(ev) {
    if (ev.janus === 'event' && ev.jsep && ev.jsep.type === 'offer') await this.answer(ev.jsep);
    else if (ev.janus === 'webrtcup') this.onState('webrtc up');
    else if (ev.janus === 'hangup') this.onState('hangup: ' + (ev.reason || ''));
  }

  async answer(offer) {
    const iceServers = (this.info.iceServers || []).map((s) => ({
      urls: s.urls, username: s.username || undefined, credential: s.credential || undefined,
    }));
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: this.iceTransportPolicy });
    this.pc = pc;
    pc.ontrack = (e) => {
      if (this.jitterBufferTargetMs > 0) this.setTarget(e.receiver, this.jitterBufferTargetMs);
      this.onTrack(e.track, e.streams[0]);
    };
    pc.oniceconnectionstatechange = () => this.onState('ice ' + pc.iceConnectionState);
    // A TURN server that refuses or cannot be reached (the page's log says which).
    pc.onicecandidateerror = (e) => this.onState(`ice candidate error ${e.errorCode} ${e.errorText} (${e.url})`);
    pc.onicecandidate = (e) => {
      const candidate = e.candidate ? e.candidate.toJSON() : { completed: true };
      post(this.handleUrl, { janus: 'trickle', transaction: tx(), token: this.info.token, candidate })
        .catch(() => {});
    };
    await pc.setRemoteDescription(offer);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await post(this.handleUrl, {
      janus: 'message', transaction: tx(), token: this.info.token,
      body: { request: 'start' }, jsep: { type: answer.type, sdp: answer.sdp },
    });
  }

  // Sets one delay on every receiver (sound and video alike), e.g. raised to the larger
  // of the two delays the receivers reach by themselves (web/app.js).
  setJitterBufferTarget(ms) {
    this.jitterBufferTargetMs = ms;
    if (this.pc) for (const r of this.pc.getReceivers()) this.setTarget(r, ms);
  }

  setTarget(receiver, ms) {
    try {
      if ('jitterBufferTarget' in receiver) receiver.jitterBufferTarget = ms;
      else receiver.playoutDelayHint = ms / 1000;  // older chromium, seconds
    } catch (err) {
      this.onState('jitterBufferTarget: ' + err.message);
    }
  }

  close() {
    this.closed = true;
    clearInterval(this.keepalive);
    if (this.pc) this.pc.close();
    if (this.sessionUrl) {
      post(this.sessionUrl, { janus: 'destroy', transaction: tx(), token: this.info.token })
        .catch(() => {});
    }
  }
}
