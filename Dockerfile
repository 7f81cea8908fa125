FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY projections projections
COPY delivery delivery
COPY api api
COPY storage storage
COPY jobledger jobledger
RUN pip install --no-cache-dir .
ENV LEDGER_HOST=0.0.0.0 LEDGER_PORT=8000
EXPOSE 8000
CMD ["ledger", "serve"]
