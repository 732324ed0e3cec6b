//! One echo connection to one page: a webrtc-rs `RTCPeerConnection` that sends the
//! page's RTP back on tracks of its own (VP8 and Opus, which every browser sends), asks
//! the page for a keyframe whenever the page asks the echo for one, echoes the chat
//! channel, and speaks the page's signaling: `{kind:'sdp'|'ice'|'state'|'back', session}`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::sdp_type::RTCSdpType;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::signaling_state::RTCSignalingState;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

use super::Gather;

/// Remote ICE candidates one echo connection takes over its life (a page that starts a
/// new session gets a new connection, and the old one is closed).
pub const MAX_REMOTE_CANDIDATES: usize = 200;

/// Sends one signal to the page (the session id is added here).
pub type Send = Arc<dyn Fn(Value) + std::marker::Send + Sync>;

fn vp8() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: [
            ("goog-remb", ""),
            ("ccm", "fir"),
            ("nack", ""),
            ("nack", "pli"),
        ]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.into(),
            parameter: parameter.into(),
        })
        .collect(),
    }
}

fn opus() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The webrtc-rs API of one echo: VP8 and Opus only (what it receives it sends back
/// unchanged, so both directions must use the same codec), NACK, RTCP reports and
/// transport-wide congestion feedback, candidates on `gather`'s addresses and no mDNS.
pub fn api(gather: Gather) -> Result<API> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            capability: vp8(),
            payload_type: 96,
            ..Default::default()
        },
        RTPCodecType::Video,
    )?;
    media.register_codec(
        RTCRtpCodecParameters {
            capability: opus(),
            payload_type: 111,
            ..Default::default()
        },
        RTPCodecType::Audio,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let mut settings = SettingEngine::default();
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    match gather {
        Gather::Any => {}
        Gather::Loopback => {
            settings.set_include_loopback_candidate(true);
            settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
        }
        Gather::Only(addr) => settings.set_ip_filter(Box::new(move |ip| ip == addr)),
    }
    Ok(APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build())
}

/// The echo's connection to one page.
pub struct Conn {
    pc: Arc<RTCPeerConnection>,
    chat: Arc<RTCDataChannel>,
    send: Send,
    remote_session: Option<String>,
    pending: Vec<RTCIceCandidateInit>,
    /// Remote candidates taken so far (see [`MAX_REMOTE_CANDIDATES`]).
    candidates: usize,
    /// Perfect negotiation: on an offer clash the polite side gives way.
    polite: bool,
}

impl Conn {
    /// A connection with the two tracks that carry the page's media back and the chat
    /// channel (negotiated, id 0, as the page opens it).
    pub async fn new(
        api: &API,
        config: RTCConfiguration,
        send: Send,
        polite: bool,
    ) -> Result<Conn> {
        let pc = Arc::new(api.new_peer_connection(config).await?);
        let session: String = (0..10)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        let send: Send = {
            let send = send.clone();
            Arc::new(move |mut data: Value| {
                data["session"] = json!(session);
                send(data)
            })
        };
        let video = Arc::new(TrackLocalStaticRTP::new(
            vp8(),
            "video".into(),
            "rtcdev-echo".into(),
        ));
        let audio = Arc::new(TrackLocalStaticRTP::new(
            opus(),
            "audio".into(),
            "rtcdev-echo".into(),
        ));
        // The page's video SSRC, once its track arrives: where keyframe requests go.
        let page_video = Arc::new(AtomicU32::new(0));
        for track in [audio.clone(), video.clone()] {
            let sender = pc
                .add_track(track as Arc<dyn TrackLocal + std::marker::Send + Sync>)
                .await?;
            tokio::spawn(forward_keyframe_requests(
                sender,
                Arc::downgrade(&pc),
                page_video.clone(),
            ));
        }
        let chat = pc
            .create_data_channel(
                "chat",
                Some(RTCDataChannelInit {
                    negotiated: Some(0),
                    ..Default::default()
                }),
            )
            .await?;
        let weak_chat = Arc::downgrade(&chat);
        chat.on_message(Box::new(move |msg| {
            let chat = weak_chat.clone();
            Box::pin(async move {
                if let Some(chat) = chat.upgrade()
                    && msg.is_string
                {
                    let _ = chat
                        .send_text(String::from_utf8_lossy(&msg.data).into_owned())
                        .await;
                }
            })
        }));
        let weak_chat = Arc::downgrade(&chat);
        chat.on_open(Box::new(move || {
            Box::pin(async move {
                if let Some(chat) = weak_chat.upgrade() {
                    let text = "You see and hear yourself: your camera and microphone, your \
                                network to rtcdev and back. Chat messages come back too.";
                    let _ = chat.send_text(json!({ "text": text }).to_string()).await;
                }
            })
        }));
        let ice_send = send.clone();
        pc.on_ice_candidate(Box::new(move |candidate| {
            let send = ice_send.clone();
            Box::pin(async move {
                if let Some(c) = candidate
                    && let Ok(init) = c.to_json()
                {
                    send(json!({ "kind": "ice", "candidate": init }));
                }
            })
        }));
        let weak = Arc::downgrade(&pc);
        pc.on_track(Box::new(move |track, _receiver, _transceiver| {
            let local = if track.kind() == RTPCodecType::Video {
                page_video.store(track.ssrc(), Ordering::Relaxed);
                video.clone()
            } else {
                audio.clone()
            };
            let pc = weak.clone();
            tokio::spawn(async move {
                if track.kind() == RTPCodecType::Video {
                    ask_keyframe(&pc, track.ssrc()).await;
                }
                // Ends when the track or the connection does.
                while let Ok((packet, _)) = track.read_rtp().await {
                    let _ = local.write_rtp(&packet).await;
                }
            });
            Box::pin(async {})
        }));
        Ok(Conn {
            pc,
            chat,
            send,
            remote_session: None,
            pending: Vec::new(),
            candidates: 0,
            polite,
        })
    }

    /// The page's session id for this connection, once it has sent one.
    pub fn remote_session(&self) -> Option<&str> {
        self.remote_session.as_deref()
    }

    /// Makes and sends an offer.
    pub async fn offer(&self) -> Result<()> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.send_description().await;
        Ok(())
    }

    async fn send_description(&self) {
        if let Some(d) = self.pc.local_description().await {
            (self.send)(json!({ "kind": "sdp", "description": d }));
        }
    }

    /// Handles one signal of the page's.
    pub async fn on_signal(&mut self, data: &Value) -> Result<()> {
        if self.remote_session.is_none()
            && let Some(s) = data.get("session").and_then(Value::as_str)
        {
            self.remote_session = Some(s.to_string());
        }
        match data.get("kind").and_then(Value::as_str).unwrap_or("") {
            "sdp" => {
                let description: RTCSessionDescription =
                    serde_json::from_value(data["description"].clone())
                        .context("not a session description")?;
                let offer = description.sdp_type == RTCSdpType::Offer;
                if offer && self.pc.signaling_state() != RTCSignalingState::Stable {
                    if !self.polite {
                        return Ok(());
                    }
                    let mut rollback = RTCSessionDescription::default();
                    rollback.sdp_type = RTCSdpType::Rollback;
                    self.pc.set_local_description(rollback).await?;
                }
                self.pc.set_remote_description(description).await?;
                if offer {
                    let answer = self.pc.create_answer(None).await?;
                    self.pc.set_local_description(answer).await?;
                    self.send_description().await;
                }
                for c in std::mem::take(&mut self.pending) {
                    let _ = self.pc.add_ice_candidate(c).await;
                }
            }
            "ice" => {
                let candidate: RTCIceCandidateInit =
                    serde_json::from_value(data["candidate"].clone()).context("not a candidate")?;
                if candidate.candidate.is_empty() {
                    return Ok(());
                }
                // A browser gathers a handful; every one added is paired with every
                // local candidate and checked, so a connection gets MAX_REMOTE_CANDIDATES
                // for the echo's life, ICE restarts included.
                if self.candidates >= MAX_REMOTE_CANDIDATES {
                    return Ok(());
                }
                self.candidates += 1;
                if self.pc.remote_description().await.is_none() {
                    self.pending.push(candidate);
                } else {
                    // A page's mDNS (.local) candidate cannot be resolved here; the
                    // page's checks reach the echo anyway (peer-reflexive).
                    let _ = self.pc.add_ice_candidate(candidate).await;
                }
            }
            // The page's badges come back as the echo's.
            "state" => (self.send)(json!({
                "kind": "state",
                "audio": data.get("audio").and_then(Value::as_bool).unwrap_or(true),
                "video": data.get("video").and_then(Value::as_bool).unwrap_or(true),
            })),
            // The page was away from the hub: an offer of ours may be lost.
            "back" if self.pc.signaling_state() == RTCSignalingState::HaveLocalOffer => {
                self.send_description().await;
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends a chat line to the page, if the channel is open.
    pub async fn chat(&self, text: &str) {
        let _ = self
            .chat
            .send_text(json!({ "text": text }).to_string())
            .await;
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

async fn ask_keyframe(pc: &Weak<RTCPeerConnection>, ssrc: u32) {
    if let Some(pc) = pc.upgrade() {
        let _ = pc
            .write_rtcp(&[Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            })])
            .await;
    }
}

/// The page's decoder asks the echo for a keyframe (a PLI or FIR on the echo's video
/// sender): the echo has none of its own, so it asks the page's encoder. Reading the
/// sender's RTCP also lets the interceptors (NACK, reports) see it.
async fn forward_keyframe_requests(
    sender: Arc<RTCRtpSender>,
    pc: Weak<RTCPeerConnection>,
    page_video: Arc<AtomicU32>,
) {
    while let Ok((packets, _)) = sender.read_rtcp().await {
        let wants = packets.iter().any(|p| {
            let any = p.as_any();
            any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
        });
        let ssrc = page_video.load(Ordering::Relaxed);
        if wants && ssrc != 0 {
            ask_keyframe(&pc, ssrc).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc::stats::StatsReportType;

    /// Every remote candidate is paired with every local one and checked: a page gets
    /// [`MAX_REMOTE_CANDIDATES`] over the echo's life, after the offer as before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_gives_a_bounded_number_of_candidates() {
        let api = api(Gather::Loopback).unwrap();
        let send: Send = Arc::new(|_| {});
        let mut conn = Conn::new(&api, RTCConfiguration::default(), send, true)
            .await
            .unwrap();
        // The page: another webrtc-rs connection, on loopback too.
        let page = api
            .new_peer_connection(RTCConfiguration::default())
            .await
            .unwrap();
        page.create_data_channel("chat", None).await.unwrap();
        let offer = page.create_offer(None).await.unwrap();
        page.set_local_description(offer.clone()).await.unwrap();
        conn.on_signal(&json!({"kind": "sdp", "description": offer}))
            .await
            .unwrap();
        for n in 0..MAX_REMOTE_CANDIDATES + 50 {
            let candidate = format!(
                "candidate:{n} 1 udp 2122260223 127.0.0.1 {} typ host",
                20000 + n
            );
            conn.on_signal(&json!({"kind": "ice", "candidate": {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}}))
                .await
                .unwrap();
        }
        // The agent takes candidates in on a task of its own: count until the count
        // holds still.
        let (mut remote, mut last) = (0, usize::MAX);
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            remote = conn
                .pc
                .get_stats()
                .await
                .reports
                .values()
                .filter(|r| matches!(r, StatsReportType::RemoteCandidate(_)))
                .count();
            if remote == last && remote > 0 {
                break;
            }
            last = remote;
        }
        assert_eq!(remote, MAX_REMOTE_CANDIDATES);
        let _ = conn.pc.close().await;
        let _ = page.close().await;
    }
}
