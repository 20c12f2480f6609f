# End-to-end client of rafka, sending the commands exactly as the rafka-rb gem 0.5.0 does
# (../shared/specs/rafka.md §4) over redis-rb. Prints one JSON document with the results.
#
# usage: ruby rafka_e2e.rb HOST PORT TOPIC GROUP
require "json"
require "securerandom"
require "redis"

module MiniRafka
  REDIS_DEFAULTS = { host: "localhost", port: 6380 }.freeze
  RETRIABLE_ERRORS = ["CONS Server shutdown"].freeze

  class Error < StandardError; end
  class CommandError < Error; end
  class ProduceError < CommandError; end
  class ConsumeError < CommandError; end

  def self.wrap_errors
    yield
  rescue Redis::CommandError => e
    case
    when e.message.start_with?("PROD ") then raise ProduceError, e.message[5..-1]
    when e.message.start_with?("CONS ") then raise ConsumeError, e.message[5..-1]
    else raise CommandError, e.message
    end
  end

  def self.with_retry(times: 15)
    yield
  rescue CommandError => e
    raise unless RETRIABLE_ERRORS.include?("CONS #{e.message}") && (times -= 1) > 0
    sleep 1
    retry
  end

  Message = Struct.new(:topic, :partition, :offset, :value) do
    def self.from_blpop(a)
      raise Error, "The message #{a.inspect} could not be parsed" unless a.is_a?(Array) && a.size == 8
      new(a[1], Integer(a[3]), Integer(a[5]), a[7])
    end
  end

  class Producer
    attr_reader :redis

    def initialize(opts = {})
      @redis = Redis.new(REDIS_DEFAULTS.merge(opts))
    end

    def produce(topic, msg, key: nil)
      MiniRafka.wrap_errors do
        redis_key = "topics:#{topic}"
        redis_key << ":#{key}" if key
        @redis.rpushx(redis_key, msg.to_s)
      end
    end

    def flush(timeout_ms = 5000)
      MiniRafka.wrap_errors { Integer(@redis.dump(timeout_ms.to_s)) }
    end

    def ping
      MiniRafka.wrap_errors { @redis.ping }
    end

    def close
      MiniRafka.wrap_errors { @redis.quit }
    end
  end

  class Consumer
    attr_reader :redis, :blpop_arg

    def initialize(opts = {})
      raise ":group option not provided" if opts[:group].nil?
      raise ":topic option not provided" if opts[:topic].nil?
      @group = opts[:group]
      @id = opts[:id] || SecureRandom.hex
      @auto_commit = opts.fetch(:auto_commit, true)
      redis_opts = REDIS_DEFAULTS.merge(opts[:redis] || {})
      redis_opts[:host] = opts[:host] if opts[:host]
      redis_opts[:port] = opts[:port] if opts[:port]
      redis_opts[:id] = "#{@group}:#{@id}"  # redis-rb sends CLIENT SETNAME on connect
      @redis = Redis.new(redis_opts)
      @blpop_arg = "topics:#{opts[:topic]}"
      librdkafka = opts[:librdkafka] || {}
      @blpop_arg << ":#{librdkafka.to_json}" unless librdkafka.empty?
    end

    def consume(timeout = 5)
      raised = false
      msg = consume_one(timeout)
      return nil if msg.nil?
      yield(msg) if block_given?
      msg
    rescue StandardError
      raised = true
      raise
    ensure
      commit(msg) if @auto_commit && msg && !raised
    end

    def consume_batch(timeout: 1.0, batch_size: 0, batching_max_sec: 0)
      if batch_size <= 0 && batching_max_sec <= 0
        raise ArgumentError, "one of batch_size or batching_max_sec must be greater than 0"
      end
      raised = false
      msgs = []
      start = Time.now
      loop do
        break if batch_size > 0 && msgs.size >= batch_size
        break if batching_max_sec > 0 && (Time.now - start >= batching_max_sec)
        msg = consume_one(timeout)
        msgs << msg if msg
      end
      begin
        yield(msgs) if block_given?
      rescue StandardError
        raised = true
        raise
      end
      msgs
    ensure
      commit(*msgs) if @auto_commit && msgs && !raised
    end

    def commit(*msgs)
      tp = prepare_for_commit(*msgs)
      tp.each do |topic, po|
        po.each { |partition, offset| @redis.rpush("acks", "#{topic}:#{partition}:#{offset}") }
      end
      tp
    end

    def ping
      MiniRafka.wrap_errors { @redis.ping }
    end

    def close
      MiniRafka.wrap_errors { @redis.quit }
    end

    private

    def consume_one(timeout)
      msg = MiniRafka.with_retry do
        MiniRafka.wrap_errors { @redis.blpop(@blpop_arg, timeout: timeout) }
      end
      msg ? Message.from_blpop(msg) : nil
    end

    def prepare_for_commit(*msgs)
      msgs.each_with_object({}) do |m, h|
        h[m.topic] ||= {}
        h[m.topic][m.partition] = [h[m.topic][m.partition] || -1, m.offset].max
      end
    end
  end
end

host, port, topic, group = ARGV
port = Integer(port)
out = { "redis_rb" => Redis::VERSION }
deadline = Time.now + 90

# -- produce ---------------------------------------------------------------------------------
producer = MiniRafka::Producer.new(host: host, port: port)
out["ping"] = producer.ping
out["produce"] = (0...10).map { |i| producer.produce(topic, "plain-#{i}") }
out["produce_keyed"] = (0...6).map { |i| producer.produce(topic, "keyed-#{i}", key: "k1") }
out["flush"] = producer.flush
begin
  producer.produce(topic, "x", key: "a:b")
rescue MiniRafka::ProduceError => e
  out["produce_error"] = e.message
end

# -- consume in a group, one message at a time (auto-commit after each) ----------------------
c1 = MiniRafka::Consumer.new(host: host, port: port, group: group, topic: topic, id: "one",
                             librdkafka: { "auto.offset.reset" => "earliest" })
out["blpop_arg"] = c1.blpop_arg
out["name"] = c1.redis.call(%w[CLIENT GETNAME])
seen = []
while seen.size < 8 && Time.now < deadline
  c1.consume(1) { |m| seen << [m.topic, m.partition, m.offset, m.value] }
end
out["consumed"] = seen
out["stats"] = c1.redis.hgetall("stats")
out["del_stats"] = c1.redis.del("stats")
begin
  MiniRafka::Consumer.new(host: host, port: port, group: group, topic: topic, id: "one").ping
rescue MiniRafka::CommandError, Redis::CommandError => e
  out["duplicate_id"] = "#{e.class.name}: #{e.message}"
end
c1.close

# -- batch consume: the gem's consume_batch loop, same group ---------------------------------
c2 = MiniRafka::Consumer.new(host: host, port: port, group: group, topic: topic, id: "two")
batches = []
while batches.flatten(1).size < 8 && Time.now < deadline
  c2.consume_batch(timeout: 0.3, batch_size: 5, batching_max_sec: 3) do |msgs|
    batches << msgs.map(&:value)
  end
end
out["batches"] = batches
c2.close

# -- commit: a sentinel produced now is the first thing the group sees next ------------------
producer.produce(topic, "sentinel", key: "k1")
producer.produce(topic, "sentinel", key: "k2")
out["flush2"] = producer.flush(10_000)
c3 = MiniRafka::Consumer.new(host: host, port: port, group: group, topic: topic, id: "three")
after = []
while after.size < 2 && Time.now < deadline
  m = c3.consume(1)
  after << m.value if m
end
out["after_commit"] = after
c3.close
out["producer_close"] = producer.close

puts JSON.generate(out)
