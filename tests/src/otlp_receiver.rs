//! An in-process OpenTelemetry collector: an OTLP/gRPC `TraceService` on a
//! free loopback port that hands every span it receives to the test, with
//! the attributes of the resource it came with.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// One span as a collector sees it.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The resource's attributes (`service.name`, `pgrollout.agent.zone`, …), as text.
    pub resource: BTreeMap<String, String>,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }

    /// The parent's span id; empty for a root span.
    pub fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }

    pub fn service(&self) -> &str {
        self.resource
            .get("service.name")
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The span's own attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| text(kv.value.as_ref()))
    }

    /// The span's own attribute `key` as OTLP typed it.
    pub fn value(&self, key: &str) -> Option<&any_value::Value> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    /// The span's attribute `key` when it is an OTLP integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key) {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            _ => None,
        }
    }

    /// The span's attribute `key` when it is an OTLP string.
    pub fn string(&self, key: &str) -> Option<&str> {
        match self.value(key) {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    /// Every piece of text the span carries: its name, status message, and
    /// the keys and values of its, its events' and its resource's attributes.
    pub fn all_text(&self) -> Vec<String> {
        let mut out = vec![
            self.span.name.clone(),
            self.span
                .status
                .as_ref()
                .map(|s| s.message.clone())
                .unwrap_or_default(),
        ];
        let pairs = |kvs: &[KeyValue]| {
            kvs.iter()
                .flat_map(|kv| [kv.key.clone(), text(kv.value.as_ref())])
                .collect::<Vec<_>>()
        };
        out.extend(pairs(&self.span.attributes));
        for event in &self.span.events {
            out.push(event.name.clone());
            out.extend(pairs(&event.attributes));
        }
        for (key, value) in &self.resource {
            out.extend([key.clone(), value.clone()]);
        }
        out
    }
}

/// Renders an OTLP value as text (arrays and maps in debug form).
pub fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT` or `otlp_endpoint`.
    pub endpoint: String,
    spans: mpsc::UnboundedReceiver<ReceivedSpan>,
    received: Vec<ReceivedSpan>,
    _stop: oneshot::Sender<()>,
}

struct Collector {
    spans: mpsc::UnboundedSender<ReceivedSpan>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for resource_spans in request.into_inner().resource_spans {
            let resource: BTreeMap<String, String> = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default()
                .into_iter()
                .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                .collect();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                let _ = self.spans.send(ReceivedSpan {
                    resource: resource.clone(),
                    span,
                });
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl OtlpReceiver {
    pub async fn start() -> Result<OtlpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (sender, spans) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector { spans: sender }))
            // No Nagle delay on replies, as a real collector: exporters wait for them.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            );
        tokio::spawn(server);
        Ok(OtlpReceiver {
            endpoint,
            spans,
            received: Vec::new(),
            _stop: stop,
        })
    }

    /// Waits until the spans received so far satisfy `complete`, then returns
    /// them all (with any that arrived at the same time). Fails after
    /// `timeout`, listing what did arrive.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        complete: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !complete(&self.received) {
            match tokio::time::timeout_at(deadline, self.spans.recv()).await {
                Ok(Some(span)) => self.received.push(span),
                Ok(None) => bail!("the receiver stopped"),
                Err(_) => bail!(
                    "spans incomplete after {timeout:?}; received: {:#?}",
                    self.received
                        .iter()
                        .map(|s| format!("{} {} ({})", s.service(), s.span.name, s.trace_id()))
                        .collect::<Vec<_>>()
                ),
            }
        }
        while let Ok(span) = self.spans.try_recv() {
            self.received.push(span);
        }
        Ok(self.received.clone())
    }

    /// Every span received so far, without waiting.
    pub fn received_now(&mut self) -> Vec<ReceivedSpan> {
        while let Ok(span) = self.spans.try_recv() {
            self.received.push(span);
        }
        self.received.clone()
    }
}

/// The span named `name` among `spans`, exactly one.
pub fn only<'a>(spans: &'a [ReceivedSpan], name: &str) -> Result<&'a ReceivedSpan> {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.span.name == name).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!("no span named {name:?}"),
        many => Err(anyhow::anyhow!("{} spans named {name:?}", many.len()))
            .context("expected exactly one"),
    }
}
