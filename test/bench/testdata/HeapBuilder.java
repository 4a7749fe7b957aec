import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedList;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * Builds a live heap that looks like a busy service's (for the uploader
 * benchmarks in test/bench): session and product caches (HashMaps of
 * Strings), request and response payloads (byte[], an eighth of them
 * incompressible like images or ciphertext), text buffers (char[]), object
 * graphs of small domain objects in lists, and primitive arrays of metrics.
 * The content is deterministic (fixed seed). Usage: java HeapBuilder MiB,
 * where MiB is the approximate live heap to build. When done it runs a GC,
 * prints "READY <used bytes>" and waits until stdin is closed, so that the
 * caller can take a heap dump of the live heap with jcmd.
 */
public class HeapBuilder {
    static final class Customer {
        long id;
        String name;
        String email;
        int tier;
        List<Order> orders = new ArrayList<>(4);
    }

    static final class Order {
        long id;
        int quantity;
        double price;
        String sku;
        Customer customer;
        Order previous;
        long createdAt;
    }

    static final String[] FIRST = {"Alice", "Bruno", "Chen", "Dagny", "Emeka", "Fatima", "Gustav", "Hana", "Ivan", "Joana",
        "Kofi", "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Ursula", "Viktor", "Wen", "Yusuf", "Zoe"};
    static final String[] LAST = {"Smith", "Müller", "Garcia", "Kowalski", "Nakamura", "Okafor", "Rossi", "Jensen", "Novak", "Silva",
        "Dubois", "Haddad", "Ivanova", "Larsen", "Moreau", "Nguyen", "Papadopoulos", "Schmidt", "Tanaka", "Weber"};
    static final String[] WORDS = {"GET", "POST", "/api/v1/orders", "/api/v1/customers", "/health", "200", "404", "500", "user_id",
        "session", "token", "cart", "checkout", "payment", "shipping", "warehouse", "eu-west-1", "timeout", "retry", "cache",
        "hit", "miss", "INFO", "WARN", "ERROR", "com.example.shop.OrderService", "java.lang.IllegalStateException", "latency_ms",
        "\"status\":", "\"items\":[", "{\"id\":", "\"price\":", "\"currency\":\"EUR\"", "trace_id=", "span_id="};

    static final Random rnd = new Random(20261123L);
    static final List<Object> roots = new ArrayList<>();

    static String hex(int n) {
        StringBuilder sb = new StringBuilder(n);
        for (int i = 0; i < n; i++) sb.append(Character.forDigit(rnd.nextInt(16), 16));
        return sb.toString();
    }

    static String text(int approxLen) {
        StringBuilder sb = new StringBuilder(approxLen + 32);
        while (sb.length() < approxLen) {
            sb.append(WORDS[rnd.nextInt(WORDS.length)]);
            switch (rnd.nextInt(4)) {
                case 0: sb.append(' ').append(rnd.nextInt(100000)); break;
                case 1: sb.append('='); break;
                default: sb.append(' ');
            }
        }
        return sb.toString();
    }

    static String name() { return FIRST[rnd.nextInt(FIRST.length)] + " " + LAST[rnd.nextInt(LAST.length)]; }

    static long align(long n) { return (n + 7) & ~7L; }

    static long stringBytes(String s) { return 24 + align(16 + s.length()); }

    public static void main(String[] args) throws Exception {
        long target = Long.parseLong(args[0]) << 20;
        long budget;

        // 30%: caches, HashMaps of Strings (sessions, product names, config).
        budget = target * 30 / 100;
        for (int m = 0; budget > 0; m++) {
            Map<String, String> cache = new HashMap<>();
            roots.add(cache);
            for (int i = 0; i < 200_000 && budget > 0; i++) {
                String k, v;
                switch (m % 3) {
                    case 0: k = "session:" + hex(24); v = "{\"user\":" + rnd.nextInt(10_000_000) + ",\"name\":\"" + name() + "\",\"cart\":" + rnd.nextInt(40) + "}"; break;
                    case 1: k = "sku-" + rnd.nextInt(1_000_000) + "-" + i; v = text(20 + rnd.nextInt(80)); break;
                    default: k = "feature." + WORDS[rnd.nextInt(WORDS.length)] + "." + i; v = rnd.nextBoolean() ? "true" : hex(12);
                }
                cache.put(k, v);
                budget -= 32 + 6 + stringBytes(k) + stringBytes(v);
            }
        }

        // 20%: payloads; an eighth incompressible.
        budget = target * 20 / 100;
        List<byte[]> payloads = new LinkedList<>();
        roots.add(payloads);
        while (budget > 0) {
            int n = 256 + rnd.nextInt(64 << 10);
            byte[] b = new byte[n];
            if (rnd.nextInt(8) == 0) {
                rnd.nextBytes(b);
            } else {
                byte[] t = text(Math.min(n, 4096)).getBytes(StandardCharsets.UTF_8);
                for (int i = 0; i < n; i += t.length) System.arraycopy(t, 0, b, i, Math.min(t.length, n - i));
                for (int i = 0; i < n / 64; i++) b[rnd.nextInt(n)] = (byte) ('0' + rnd.nextInt(10));
            }
            payloads.add(b);
            budget -= align(16 + n) + 24;
        }

        // 10%: text buffers (UTF-16).
        budget = target * 10 / 100;
        List<char[]> buffers = new ArrayList<>();
        roots.add(buffers);
        while (budget > 0) {
            char[] c = (text(512 + rnd.nextInt(16 << 10)) + " grüße 日本 " + name()).toCharArray();
            buffers.add(c);
            budget -= align(16 + 2L * c.length) + 4;
        }

        // 30%: domain object graphs.
        budget = target * 30 / 100;
        String[] skus = new String[20_000];
        for (int i = 0; i < skus.length; i++) skus[i] = "SKU-" + hex(8);
        List<Customer> customers = new ArrayList<>();
        List<Order> orders = new ArrayList<>();
        roots.add(customers);
        roots.add(orders);
        long now = 1_763_900_000_000L;
        Order prev = null;
        while (budget > 0) {
            Customer c = new Customer();
            c.id = customers.size();
            c.name = name();
            c.email = c.name.toLowerCase().replace(' ', '.') + "@example.com";
            c.tier = rnd.nextInt(4);
            customers.add(c);
            budget -= 32 + stringBytes(c.name) + stringBytes(c.email) + 24 + align(16 + 4 * 4) + 4;
            for (int i = rnd.nextInt(8); i > 0; i--) {
                Order o = new Order();
                o.id = orders.size();
                o.quantity = 1 + rnd.nextInt(5);
                o.price = Math.round(rnd.nextDouble() * 20000) / 100.0;
                o.sku = skus[rnd.nextInt(skus.length)];
                o.customer = c;
                o.previous = prev;
                o.createdAt = now + o.id * 37 + rnd.nextInt(1000);
                c.orders.add(o);
                orders.add(o);
                prev = rnd.nextInt(3) == 0 ? null : o;
                budget -= 56 + 8;
            }
        }

        // 10%: metrics, primitive arrays.
        budget = target * 10 / 100;
        List<Object> metrics = new ArrayList<>();
        roots.add(metrics);
        while (budget > 0) {
            int n = 1024 + rnd.nextInt(8192);
            switch (rnd.nextInt(3)) {
                case 0: {
                    long[] ts = new long[n];
                    for (int i = 0; i < n; i++) ts[i] = now + i * 1000L + rnd.nextInt(50);
                    metrics.add(ts);
                    budget -= align(16 + 8L * n);
                    break;
                }
                case 1: {
                    int[] counts = new int[n];
                    for (int i = 0; i < n; i++) counts[i] = rnd.nextInt(1 + i % 1000);
                    metrics.add(counts);
                    budget -= align(16 + 4L * n);
                    break;
                }
                default: {
                    double[] lat = new double[n];
                    for (int i = 0; i < n; i++) lat[i] = Math.abs(rnd.nextGaussian()) * 25.0;
                    metrics.add(lat);
                    budget -= align(16 + 8L * n);
                }
            }
        }

        System.gc();
        Runtime rt = Runtime.getRuntime();
        System.out.println("READY " + (rt.totalMemory() - rt.freeMemory()));
        System.out.flush();
        while (System.in.read() >= 0) {
            // wait for the caller to close stdin
        }
        System.out.println("roots " + roots.size());
    }
}
