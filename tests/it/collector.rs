//! A stand-in OpenTelemetry collector for the trace tests: it takes OTLP/HTTP exports and keeps
//! the spans (part of the test harness, `helpers`).

use std::sync::Arc;

/// A stand-in OpenTelemetry collector: takes OTLP/HTTP exports (`POST /v1/traces`, protobuf) and
/// keeps every span it receives.
pub struct Collector {
    pub port: u16,
    spans: Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

impl Collector {
    pub async fn start() -> Collector {
        use prost::Message;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    // Headers, then as many body bytes as Content-Length says.
                    let (head_end, length) = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (at + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = &buf[head_end..head_end + length];
                    if let Ok(req) = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body) {
                        let mut all = kept.lock().unwrap();
                        for r in req.resource_spans {
                            for s in r.scope_spans {
                                all.extend(s.spans);
                            }
                        }
                    }
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        Collector { port, spans }
    }

    /// The `otel.endpoint` that points at it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// Every attribute value of a span, as text.
pub fn attribute_values(span: &opentelemetry_proto::tonic::trace::v1::Span) -> Vec<String> {
    span.attributes
        .iter()
        .map(|kv| format!("{}={:?}", kv.key, kv.value))
        .collect()
}
