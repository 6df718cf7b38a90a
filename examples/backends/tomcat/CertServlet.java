// What a Tomcat application sees behind Application Gateway when SSLValve reads the forwarded
// certificate: the request attribute jakarta.servlet.request.X509Certificate, as if the client
// had done TLS with Tomcat itself. Answers the parsed facts as JSON (401 without a certificate),
// so a test can compare them with the header vectors.
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.security.cert.X509Certificate;

public class CertServlet extends HttpServlet {
    private static final String ATTRIBUTE = "jakarta.servlet.request.X509Certificate";

    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response)
            throws IOException {
        response.setContentType("application/json");
        response.setCharacterEncoding("UTF-8");
        X509Certificate[] certificates = (X509Certificate[]) request.getAttribute(ATTRIBUTE);
        if (certificates == null || certificates.length == 0) {
            response.setStatus(401);
            response.getWriter().write("{\"error\": \"a client certificate is required\"}");
            return;
        }
        X509Certificate leaf = certificates[0];
        response.getWriter().write("{\"subject\": " + quote(leaf.getSubjectX500Principal().getName())
                + ", \"serialDecimal\": \"" + leaf.getSerialNumber().toString() + "\""
                + ", \"notAfterEpochMs\": " + leaf.getNotAfter().getTime() + "}");
    }

    private static String quote(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20 || c > 0x7e) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }
}
